from google.rpc import code_pb2

from comfyfleet.common.errors import InvalidArgument, status_of


def test_an_unimplemented_method_is_unimplemented_not_internal() -> None:
    assert status_of(NotImplementedError("Method not implemented!")).code == code_pb2.UNIMPLEMENTED


def test_unknown_exceptions_hide_their_text() -> None:
    status = status_of(RuntimeError("secret path /etc/x"))
    assert status.code == code_pb2.INTERNAL
    assert "secret" not in status.message


def test_typed_errors_keep_their_code() -> None:
    assert status_of(InvalidArgument("bad")).code == code_pb2.INVALID_ARGUMENT
