"""``comfyfleet``: submit workflows, follow them and manage keys from a terminal."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import json_format

from comfyfleet.cli import budget as budget_commands
from comfyfleet.cli import environments as environment_commands
from comfyfleet.cli import keys as key_commands
from comfyfleet.cli import models as model_commands
from comfyfleet.cli import run as local_run
from comfyfleet.cli import webhooks as webhook_commands
from comfyfleet.cli.progress import ProgressLine, state_name
from comfyfleet.cli.usage import UsageError
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.sdk import ApiError, Client, Settings
from comfyfleet.sdk.client import TERMINAL
from comfyfleet.sdk.requests import InputSource


def parse_inputs(pairs: Sequence[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--input takes NAME=PATH, got {pair!r}")
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"--input {name}: no file at {path}")
        inputs[name] = file
    return inputs


def parse_submit_inputs(pairs: Sequence[str]) -> dict[str, InputSource]:
    """NAME=PATH (a local file) or NAME=URL (http(s), downloaded by the platform)."""
    urls = {
        name: url
        for name, sep, url in (p.partition("=") for p in pairs)
        if sep and name and url.startswith(("http://", "https://"))
    }
    files = parse_inputs([p for p in pairs if p.partition("=")[0] not in urls])
    return {**files, **urls}


def load_workflow(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no workflow file at {path}")
    text = file.read_text()
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not JSON: {err}") from None
    return text


def print_execution(execution: executions_pb2.Execution) -> None:
    print(json.dumps(json_format.MessageToDict(execution), indent=2))


def follow(client: Client, execution_id: str) -> executions_pb2.Execution:
    bar = ProgressLine()
    try:
        for event in client.watch(execution_id):
            bar.update(event)
            if event.status in TERMINAL:
                break
    finally:
        bar.close()
    return client.get(execution_id)


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    workflow = load_workflow(args.workflow)
    inputs = parse_submit_inputs(args.input)
    execution = client.submit(
        workflow,
        inputs,
        priority=args.priority,
        request_id=args.request_id or "",
        labels=parse_labels(args.label),
        webhook_events=args.webhook_event,
        environment=args.environment or "",
    )
    print(f"submitted {execution.id}", file=sys.stderr)
    if not args.wait:
        print(execution.id)
        return 0
    execution = follow(client, execution.id)
    return finish(client, execution, args.out)


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return finish(client, follow(client, args.id), args.out)


def cmd_results(client: Client, args: argparse.Namespace) -> int:
    execution = client.get(args.id)
    if execution.state not in TERMINAL:
        raise UsageError(
            f"{args.id} is {state_name(execution.state)}; wait with: comfyfleet watch {args.id}"
        )
    return finish(client, execution, args.out)


def finish(client: Client, execution: executions_pb2.Execution, out: str | None) -> int:
    state = state_name(execution.state)
    if execution.state != executions_pb2.EXECUTION_STATE_SUCCEEDED:
        print(f"{execution.id} {state}: {execution.error.message}", file=sys.stderr)
        return 1
    print(
        f"{execution.id} succeeded in {execution.metrics.execution_time_seconds:.2f}s",
        file=sys.stderr,
    )
    if out:
        for path in client.download_outputs(execution, Path(out)):
            print(path)
    else:
        for output in execution.outputs:
            print(output.url)
    return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    print_execution(client.get(args.id))
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    try:
        page = client.list_executions(
            page_size=args.limit, state=args.state, labels=parse_labels(args.label)
        )
    except ValueError as err:  # an unknown --state
        raise UsageError(str(err)) from None
    for e in page.executions:
        print(f"{e.id}  {state_name(e.state):<10}  {e.create_time.ToDatetime():%Y-%m-%d %H:%M:%S}")
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    print(state_name(client.cancel(args.id).state))
    return 0


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    for event in client.watch(args.id, after_sequence=args.after):
        p = event.progress
        where = f" node {p.node_id} ({p.class_type}) {p.value}/{p.max}" if p.node_id else ""
        error = f" error: {event.error.message}" if event.error.message else ""
        stamp = event.timestamp.ToDatetime()
        print(f"{event.sequence:>4} {stamp:%H:%M:%S.%f} {event.event_type}{where}{error}")
        if event.status in TERMINAL and not args.follow:
            break
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="comfyfleet", description=__doc__)
    root.add_argument(
        "--addr", help="gateway gRPC address (default: $COMFYFLEET_ADDR or 127.0.0.1:50051)"
    )
    root.add_argument(
        "--api-key", help="API key (default: $COMFYFLEET_API_KEY or make up's admin key)"
    )
    root.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="tries per call while the platform answers UNAVAILABLE, with back-off; a submit "
        "keeps its request id across them (default: $COMFYFLEET_MAX_ATTEMPTS or 8; 1: none)",
    )
    sub = root.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", help="submit a workflow in ComfyUI's API format")
    submit.add_argument("workflow")
    submit.add_argument("--input", action="append", default=[], metavar="NAME=PATH|NAME=URL")
    submit.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--wait", action="store_true", help="follow progress until it ends")
    submit.add_argument("--out", help="with --wait: download the outputs into this folder")
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument(
        "--environment",
        metavar="NAME",
        help="the environment to run in (default: the tenant's, else the platform's)",
    )
    submit.add_argument("--request-id", help="idempotency key: a retry returns the first result")
    submit.add_argument(
        "--webhook-event",
        action="append",
        default=[],
        metavar="TYPE",
        help="send only these of its events to webhooks (execution.succeeded, execution.*);"
        " repeatable; default: every event a subscription wants",
    )
    submit.set_defaults(run=cmd_submit)

    watch = sub.add_parser("watch", help="follow an execution with a progress bar until it ends")
    watch.add_argument("id")
    watch.add_argument("--out", help="download the outputs into this folder when it succeeds")
    watch.set_defaults(run=cmd_watch)

    results = sub.add_parser("results", help="download a finished execution's outputs")
    results.add_argument("id")
    results.add_argument("--out", required=True, help="the folder to write the outputs to")
    results.set_defaults(run=cmd_results)

    get = sub.add_parser("get", help="show an execution")
    get.add_argument("id")
    get.set_defaults(run=cmd_get)

    listing = sub.add_parser("list", help="list recent executions")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--state", help="only executions in this state, e.g. running")
    listing.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only executions with this label; repeatable (all must match)",
    )
    listing.set_defaults(run=cmd_list)

    cancel = sub.add_parser("cancel", help="cancel an execution")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_cancel)

    logs = sub.add_parser("logs", help="print an execution's events")
    logs.add_argument("id")
    logs.add_argument("--after", type=int, default=0, help="start after this sequence number")
    logs.add_argument(
        "--follow", action="store_true", help="keep following (default: stop at the end)"
    )
    logs.set_defaults(run=cmd_logs)

    key_commands.add_parser(sub)
    budget_commands.add_parser(sub)
    environment_commands.add_parser(sub)
    model_commands.add_parser(sub)
    webhook_commands.add_parser(sub)
    local_run.add_parser(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = _dispatch(args)
        # Written here, not at exit, so that a reader gone away is handled below.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `comfyfleet list | head`: the reader has what it wanted; stop quietly, as a shell
        # tool killed by SIGPIPE would, with nothing left to write at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if local := getattr(args, "local", None):
            return int(local(args))
        settings = Settings.discover(args.addr, args.api_key, max_attempts=args.max_attempts)
        with Client(settings) as client:
            return int(args.run(client, args))
    except (ApiError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
