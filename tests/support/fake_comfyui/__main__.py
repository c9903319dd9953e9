"""``python -m tests.support.fake_comfyui``: the fake as a process, with ComfyUI's flags.

Takes what the comfyui engine passes a real ComfyUI (``--listen``, ``--port``,
``--input-directory``, ``--output-directory``; device flags are accepted and ignored) and
``--fake-*`` flags for the :class:`Behaviour`. ``--fake-refuse-for S`` waits S seconds
before listening, as a ComfyUI loading its nodes does (connections are refused meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from tests.support.fake_comfyui.server import Behaviour, FakeComfyUI, read_model_paths


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-directory", type=Path, default=Path("input"))
    parser.add_argument("--output-directory", type=Path, default=Path("output"))
    parser.add_argument("--extra-model-paths-config", type=Path, action="append", default=[])
    parser.add_argument("--fake-refuse-for", type=float, default=0.0)
    parser.add_argument("--fake-unavailable-for", type=float, default=0.0)
    parser.add_argument("--fake-node-seconds", type=float, default=0.0)
    parser.add_argument("--fake-silent-from-node")
    parser.add_argument("--fake-drop-sockets-at-node")
    parser.add_argument("--fake-crash-at-node")
    parser.add_argument("--fake-crash-marker", type=Path)
    parser.add_argument("--fake-ignore-interrupts", action="store_true")
    # ComfyUI's other flags (--cpu, --cuda-device N, ...) mean nothing to the fake.
    args, _ = parser.parse_known_args()
    return args


async def main() -> None:
    args = _arguments()
    await asyncio.sleep(args.fake_refuse_for)
    behaviour = Behaviour(
        unavailable_for_s=args.fake_unavailable_for,
        node_seconds=args.fake_node_seconds,
        silent_from_node=args.fake_silent_from_node,
        drop_sockets_at_node=args.fake_drop_sockets_at_node,
        crash_at_node=args.fake_crash_at_node,
        crash_marker=args.fake_crash_marker,
        ignore_interrupts=args.fake_ignore_interrupts,
    )
    model_paths: dict[str, list[Path]] = {}
    for config in args.extra_model_paths_config:
        for folder, paths in read_model_paths(config).items():
            model_paths.setdefault(folder, []).extend(paths)
    fake = FakeComfyUI(
        args.input_directory, args.output_directory, behaviour, model_paths=model_paths
    )
    runner = web.AppRunner(fake.app(), shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, args.listen, args.port).start()
    print(f"To see the GUI go to: http://{args.listen}:{args.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
