"""Proto comments for the OpenAPI document, kept beside the code as ``proto_comments.json``.

The generated ``*_pb2`` modules drop comments, so they are read once, at build time, from
``protoc --include_source_info`` and committed like the generated code; a test fails when the
file is stale. Regenerate with::

    .venv/bin/python -m services.gateway.rest.protodocs

Keys are full names: ``pkg.Service``, ``pkg.Service.Method``, ``pkg.Message``,
``pkg.Message.field``, ``pkg.Enum`` and ``pkg.Enum.VALUE``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

COMMENTS_FILE = Path(__file__).with_name("proto_comments.json")
REPO_ROOT = Path(__file__).resolve().parents[3]

# Field numbers of FileDescriptorProto & co., as source_code_info paths use them.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


def load_comments(path: Path = COMMENTS_FILE) -> dict[str, str]:
    """The committed comments; empty when the file is absent (descriptions are then left out)."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


def extract_comments(file_set: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading (else trailing) comments of every named element in files with source info."""
    out: dict[str, str] = {}
    for file in file_set.file:
        texts = {
            tuple(loc.path): _clean(loc.leading_comments or loc.trailing_comments)
            for loc in file.source_code_info.location
        }
        for name, path in _elements(file):
            text = texts.get(path, "")
            if text:
                out[name] = text
    return out


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    prefix = f"{file.package}." if file.package else ""
    for i, msg in enumerate(file.message_type):
        yield from _message(msg, prefix, (_FILE_MESSAGE, i))
    for i, enum in enumerate(file.enum_type):
        yield from _enum(enum, prefix, (_FILE_ENUM, i))
    for i, service in enumerate(file.service):
        name = prefix + service.name
        yield name, (_FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield f"{name}.{method.name}", (_FILE_SERVICE, i, _SERVICE_METHOD, j)


def _message(
    msg: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...]
) -> Iterator[tuple[str, tuple[int, ...]]]:
    name = prefix + msg.name
    yield name, path
    for i, field in enumerate(msg.field):
        yield f"{name}.{field.name}", (*path, _MESSAGE_FIELD, i)
    for i, nested in enumerate(msg.nested_type):
        yield from _message(nested, f"{name}.", (*path, _MESSAGE_NESTED, i))
    for i, enum in enumerate(msg.enum_type):
        yield from _enum(enum, f"{name}.", (*path, _MESSAGE_ENUM, i))


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, prefix: str, path: tuple[int, ...]
) -> Iterator[tuple[str, tuple[int, ...]]]:
    name = prefix + enum.name
    yield name, path
    for i, value in enumerate(enum.value):
        yield f"{name}.{value.name}", (*path, _ENUM_VALUE, i)


def _clean(comment: str) -> str:
    """Comment lines without the single space after ``//``, joined into paragraphs."""
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def compile_with_source_info(
    proto_root: Path, files: Sequence[str]
) -> descriptor_pb2.FileDescriptorSet:
    """Runs protoc (from grpcio-tools, a development dependency) with source info kept."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "protoc",
            *(f"-I{path}" for path in _include_paths(proto_root)),
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {list(files)}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _include_paths(proto_root: Path) -> list[str]:
    import google.api
    import grpc_tools

    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    return [
        str(proto_root),
        str(googleapis),
        os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"),
    ]


def generate(proto_root: Path = REPO_ROOT / "protos") -> str:
    """The comments file's content for every .proto under ``proto_root``, byte for byte stable."""
    files = sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("*.proto"))
    comments = extract_comments(compile_with_source_info(proto_root, files))
    return json.dumps(comments, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    COMMENTS_FILE.write_text(generate())
    print(f"wrote {COMMENTS_FILE.relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
