"""Build-time check that the installed package (not the source tree) can run the services.

``pip install .`` installs only what pyproject.toml declares; a service whose migrations or
package data were left out would start in the image and fail at its first connection. Run
from a directory outside the source tree, with the image's interpreter:

    cd / && /opt/comfyfleet/bin/python /src/deploy/docker/verify_install.py gateway scheduler

``--absent MODULE`` (repeatable) also fails it when MODULE is installed: the control plane
installs ``comfyfleet[server]``, which must not bring torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

# Services that own a PostgreSQL schema apply these at start (comfyfleet.common.db).
WITH_MIGRATIONS = {"gateway", "scheduler", "models", "webhook"}


def problems(service: str) -> list[str]:
    module = importlib.import_module(f"services.{service}.server")
    package_dir = Path(module.__file__ or "").parent
    if "site-packages" not in package_dir.parts:
        return [f"services.{service} imported from {package_dir}, not the installed package"]
    if service in WITH_MIGRATIONS and not list((package_dir / "migrations").glob("*.sql")):
        return [f"services.{service}: no migrations/*.sql installed (package data missing)"]
    return []


def installed_anyway(modules: list[str]) -> list[str]:
    return [
        f"{m} is installed, and this image must not have it"
        for m in modules
        if importlib.util.find_spec(m)
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*")
    parser.add_argument("--absent", action="append", default=[], metavar="MODULE")
    args = parser.parse_args(argv)
    found = [p for s in args.services for p in problems(s)] + installed_anyway(args.absent)
    for problem in found:
        print(f"verify_install: {problem}", file=sys.stderr)
    return 1 if found or not args.services else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
