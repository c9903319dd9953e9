"""Local infrastructure for `make up` and the test suite: PostgreSQL, NATS JetStream, S3."""

from comfyfleet.devstack.errors import DevStackError, MissingBinaryError, StartupError
from comfyfleet.devstack.nats import NatsServer
from comfyfleet.devstack.postgres import PostgresServer
from comfyfleet.devstack.process import ManagedProcess, Server, free_port
from comfyfleet.devstack.s3 import MotoS3Server, S3Credentials, S3rverServer, S3Server
from comfyfleet.devstack.stack import DevStack, StackConfig

__all__ = [
    "DevStack",
    "DevStackError",
    "ManagedProcess",
    "MissingBinaryError",
    "MotoS3Server",
    "NatsServer",
    "PostgresServer",
    "S3Credentials",
    "S3Server",
    "S3rverServer",
    "Server",
    "StackConfig",
    "StartupError",
    "free_port",
]
