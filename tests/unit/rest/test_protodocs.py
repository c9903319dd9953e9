"""Reading proto comments out of source info, by full name."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, text_format

from services.gateway.rest.protodocs import extract_comments

# A file as protoc --include_source_info describes it; paths are field numbers and indexes.
FILE_SET = """
file {
  name: "x.proto" package: "pkg.v1"
  message_type {
    name: "Outer"
    field { name: "a" number: 1 type: TYPE_STRING }
    field { name: "b" number: 2 type: TYPE_STRING }
    nested_type { name: "Inner" field { name: "c" number: 1 type: TYPE_STRING } }
    enum_type { name: "Kind" value { name: "KIND_UNSPECIFIED" number: 0 } }
  }
  enum_type { name: "Top" value { name: "TOP_UNSPECIFIED" number: 0 } value { name: "TOP_ONE" number: 1 } }
  service { name: "Svc" method { name: "Do" input_type: ".pkg.v1.Outer" output_type: ".pkg.v1.Outer" } }
  source_code_info {
    location { path: [4, 0] leading_comments: " Outer is the outer message.\\n It has two lines.\\n" }
    location { path: [4, 0, 2, 0] leading_comments: " The a field.\\n" }
    location { path: [4, 0, 2, 1] trailing_comments: " b, trailing.\\n" }
    location { path: [4, 0, 3, 0, 2, 0] leading_comments: " The c field.\\n" }
    location { path: [4, 0, 4, 0, 2, 0] leading_comments: " Not known.\\n" }
    location { path: [5, 0, 2, 1] leading_comments: " The first one.\\n" }
    location { path: [6, 0] leading_comments: " Svc does things.\\n" }
    location { path: [6, 0, 2, 0] leading_comments: " Does it.\\n\\n   Indented example.\\n" }
  }
}
"""


def test_comments_are_keyed_by_full_name() -> None:
    file_set = text_format.Parse(FILE_SET, descriptor_pb2.FileDescriptorSet())
    assert extract_comments(file_set) == {
        "pkg.v1.Outer": "Outer is the outer message.\nIt has two lines.",
        "pkg.v1.Outer.a": "The a field.",
        "pkg.v1.Outer.b": "b, trailing.",
        "pkg.v1.Outer.Inner.c": "The c field.",
        "pkg.v1.Outer.Kind.KIND_UNSPECIFIED": "Not known.",
        "pkg.v1.Top.TOP_ONE": "The first one.",
        "pkg.v1.Svc": "Svc does things.",
        "pkg.v1.Svc.Do": "Does it.\n\n  Indented example.",
    }


def test_files_without_source_info_give_nothing() -> None:
    file_set = text_format.Parse(FILE_SET, descriptor_pb2.FileDescriptorSet())
    file_set.file[0].ClearField("source_code_info")
    assert extract_comments(file_set) == {}
