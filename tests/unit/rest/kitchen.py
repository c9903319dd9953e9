"""A test-only service whose messages hold every kind of field the transcoder must handle.

It is built from a FileDescriptorProto in code (no protoc, no files), added to the default
descriptor pool once, and used through descriptors only, exactly as the REST front uses the
real services.
"""

from __future__ import annotations

from string import Template

from google.api import annotations_pb2  # noqa: F401  (registers the google.api.http option)
from google.protobuf import (
    descriptor,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,  # noqa: F401
    field_mask_pb2,  # noqa: F401
    message,
    message_factory,
    text_format,
    timestamp_pb2,  # noqa: F401
    wrappers_pb2,  # noqa: F401
)

FILE = "comfyfleet_rest_test/kitchen/v1/kitchen.proto"
PACKAGE = "comfyfleet_rest_test.kitchen.v1"
SERVICE = f"{PACKAGE}.KitchenService"

_FILE_TEXT = Template("""
name: "$file"
package: "$package"
syntax: "proto3"
dependency: "google/api/annotations.proto"
dependency: "google/protobuf/timestamp.proto"
dependency: "google/protobuf/duration.proto"
dependency: "google/protobuf/field_mask.proto"
dependency: "google/protobuf/wrappers.proto"
enum_type {
  name: "Color"
  value { name: "COLOR_UNSPECIFIED" number: 0 }
  value { name: "COLOR_RED" number: 1 }
  value { name: "COLOR_BLUE" number: 2 }
}
message_type {
  name: "Inner"
  field { name: "leaf" number: 1 type: TYPE_STRING json_name: "leaf" }
  field { name: "n" number: 2 type: TYPE_INT32 json_name: "n" }
}
message_type {
  name: "Nested"
  field { name: "name" number: 1 type: TYPE_STRING json_name: "name" }
  field { name: "inner" number: 2 type: TYPE_MESSAGE type_name: ".$package.Inner" json_name: "inner" }
}
message_type {
  name: "Item"
  field { name: "id" number: 1 type: TYPE_STRING json_name: "id" }
  field { name: "count" number: 2 type: TYPE_INT32 json_name: "count" }
  field { name: "big" number: 3 type: TYPE_INT64 json_name: "big" }
  field { name: "flag" number: 4 type: TYPE_BOOL json_name: "flag" }
  field { name: "ratio" number: 5 type: TYPE_DOUBLE json_name: "ratio" }
  field { name: "color" number: 6 type: TYPE_ENUM type_name: ".$package.Color" json_name: "color" }
  field { name: "tags" number: 7 label: LABEL_REPEATED type: TYPE_STRING json_name: "tags" }
  field { name: "colors" number: 8 label: LABEL_REPEATED type: TYPE_ENUM type_name: ".$package.Color" json_name: "colors" }
  field { name: "nums" number: 9 label: LABEL_REPEATED type: TYPE_INT32 json_name: "nums" }
  field { name: "nested" number: 10 type: TYPE_MESSAGE type_name: ".$package.Nested" json_name: "nested" }
  field { name: "labels" number: 11 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".$package.Item.LabelsEntry" json_name: "labels" }
  field { name: "when_time" number: 12 type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp" json_name: "whenTime" }
  field { name: "wait" number: 13 type: TYPE_MESSAGE type_name: ".google.protobuf.Duration" json_name: "wait" }
  field { name: "maybe_count" number: 14 type: TYPE_MESSAGE type_name: ".google.protobuf.Int32Value" json_name: "maybeCount" }
  field { name: "maybe_flag" number: 15 type: TYPE_MESSAGE type_name: ".google.protobuf.BoolValue" json_name: "maybeFlag" }
  field { name: "blob" number: 16 type: TYPE_BYTES json_name: "blob" }
  field { name: "nesteds" number: 17 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".$package.Nested" json_name: "nesteds" }
  field { name: "after_sequence" number: 18 type: TYPE_INT64 json_name: "afterSequence" }
  field { name: "sequence" number: 19 type: TYPE_INT64 json_name: "sequence" }
  field { name: "counts" number: 20 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".$package.Item.CountsEntry" json_name: "counts" }
  nested_type {
    name: "LabelsEntry"
    field { name: "key" number: 1 type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 type: TYPE_STRING json_name: "value" }
    options { map_entry: true }
  }
  nested_type {
    name: "CountsEntry"
    field { name: "key" number: 1 type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 type: TYPE_INT32 json_name: "value" }
    options { map_entry: true }
  }
}
message_type {
  name: "UpdateItemRequest"
  field { name: "item" number: 1 type: TYPE_MESSAGE type_name: ".$package.Item" json_name: "item" }
  field { name: "update_mask" number: 2 type: TYPE_MESSAGE type_name: ".google.protobuf.FieldMask" json_name: "updateMask" }
  field { name: "note" number: 3 type: TYPE_STRING json_name: "note" }
}
service {
  name: "KitchenService"
  method {
    name: "GetItem" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] {
      get: "/v1/items/{id}"
      additional_bindings { get: "/v1/shelves/{nested.name}/items/{id}" }
    } }
  }
  method {
    name: "CreateItem" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { post: "/v1/items" body: "*" } }
  }
  method {
    name: "UpdateItem" input_type: ".$package.UpdateItemRequest" output_type: ".$package.Item"
    options { [google.api.http] { patch: "/v1/items/{item.id}" body: "item" } }
  }
  method {
    name: "ReplaceNested" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { put: "/v1/items/{id}/nested" body: "nested" response_body: "nested" } }
  }
  method {
    name: "ReplaceTags" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { put: "/v1/items/{id}/tags" body: "tags" response_body: "tags" } }
  }
  method {
    name: "DeleteItem" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { delete: "/v1/items/{id}" } }
  }
  method {
    name: "PeekItem" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { custom { kind: "SEARCH" path: "/v1/items/{id}:peek" } } }
  }
  method {
    name: "GetFile" input_type: ".$package.Item" output_type: ".$package.Item"
    options { [google.api.http] { get: "/v1/{id=files/**}" } }
  }
  method {
    name: "WatchItem" input_type: ".$package.Item" output_type: ".$package.Item"
    server_streaming: true
    options { [google.api.http] { get: "/v1/items/{id}:watch" } }
  }
  method {
    name: "Unannotated" input_type: ".$package.Item" output_type: ".$package.Item"
  }
}
""").substitute(file=FILE, package=PACKAGE)


def file_descriptor() -> descriptor.FileDescriptor:
    """The kitchen file from the default pool, added on first use."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(FILE)
    except KeyError:
        proto = text_format.Parse(_FILE_TEXT, descriptor_pb2.FileDescriptorProto())
        pool.Add(proto)
        return pool.FindFileByName(FILE)


def service() -> descriptor.ServiceDescriptor:
    return file_descriptor().services_by_name["KitchenService"]


def message_class(name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(file_descriptor().message_types_by_name[name])
