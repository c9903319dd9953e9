"""The chaos test (tests/e2e/test_chaos.py) at size: 1,000 executions by default.

    .venv/bin/python bench/chaos.py                                  # 1,000 executions
    .venv/bin/python bench/chaos.py --executions 48 --seed 1119      # the test's run
    .venv/bin/python bench/chaos.py --seed 7 --window 300 --clients 16

The platform's processes (gateway, two scheduler replicas, models, webhook, two native
executors) under a Launcher that restarts whatever dies, on a PostgreSQL, NATS and S3 server
of this run's own. While clients submit a_tiny workflows in colours of their own (a quarter
over REST, the rest with the SDK, each retrying under its request_id), a seeded plan SIGKILLs
a service every few seconds (each at least once) and restarts PostgreSQL (at a third of the
window) and NATS (at two thirds). Then the platform drains and the run checks what the test
checks (see tests/support/chaos/checks.py); figures are printed, and with ``--markdown``
appended to a file. Exit status 1 when a check failed (the figures say how far it got).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from comfyfleet.devstack.s3 import make_s3_server
from tests.e2e.receiver import webhook_receiver
from tests.support.chaos import (
    ChaosFleet,
    ChaosSettings,
    Figures,
    ObjectStoreInfo,
    run_chaos,
)
from tests.support.infra import session_dir

BUCKET = "chaos"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="seconds of submissions and kills (default: "
        "a quarter of a second per execution, at least 30)",
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-gap", default="2,5", help="seconds between kills: MIN,MAX")
    parser.add_argument(
        "--infra-restarts",
        type=int,
        default=None,
        help="restarts of PostgreSQL and of NATS each (default: one per 60 s of window)",
    )
    parser.add_argument(
        "--infra-down", type=float, default=3.0, help="seconds each restart stays down"
    )
    parser.add_argument("--markdown", type=Path, help="append the figures to this file")
    return parser.parse_args()


def settings_of(args: argparse.Namespace) -> ChaosSettings:
    low, high = (float(x) for x in args.kill_gap.split(","))
    window = args.window or max(30.0, args.executions / 4)
    return ChaosSettings(
        seed=args.seed if args.seed is not None else random.randrange(1 << 31),
        executions=args.executions,
        window_s=window,
        kill_gap_s=(low, high),
        infra_restarts=args.infra_restarts or max(1, round(window / 60)),
        infra_down_s=args.infra_down,
        clients=args.clients,
        submit_deadline_s=120.0,
        drain_timeout_s=max(180.0, args.executions * 0.5),
    )


def markdown(figures: Figures, command: str, outcome: str) -> str:
    return "\n".join(
        [
            f"### {figures.settings.executions} executions, seed {figures.settings.seed}",
            "",
            f"`{command}` — {outcome}",
            "",
            "```",
            figures.text(),
            "```",
            "",
        ]
    )


async def run(figures: Figures) -> str:
    with session_dir() as base, make_s3_server("s3rver", data_dir=base / "s3") as s3:
        s3.ensure_bucket(BUCKET)
        creds = s3.credentials
        store = ObjectStoreInfo(
            s3.endpoint, creds.access_key, creds.secret_key, creds.region, BUCKET
        )
        with ChaosFleet.running(store) as fleet, webhook_receiver() as receiver:
            try:
                await run_chaos(fleet, receiver, figures)
            except AssertionError as err:
                return f"FAILED: {str(err)[:2000]}"
            finally:
                assert fleet.chaos is not None
                print("\n".join(fleet.chaos.log.lines))
        return "passed"


def main() -> int:
    args = parse_args()
    figures = Figures(settings_of(args))
    print(f"chaos seed {figures.settings.seed}", flush=True)
    started = time.monotonic()
    outcome = asyncio.run(run(figures))
    print(figures.text())
    print(f"{outcome} ({time.monotonic() - started:.0f}s with start and stop)")
    if args.markdown:
        command = " ".join(["bench/chaos.py", *sys.argv[1:]])
        with args.markdown.open("a") as out:
            out.write(markdown(figures, command, outcome))
    return 0 if outcome == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
