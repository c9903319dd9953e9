"""The workflow package must stay importable without torch (the gateway validates with it)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO_ROOT

MODULES = ["budget", "catalog", "engine", "graph", "io", "runner", "schedule", "specs", "validate"]


def test_workflow_package_imports_no_torch_or_numpy() -> None:
    imports = "; ".join(f"import comfyfleet.workflow.{m}" for m in MODULES)
    check = "import sys; bad = {'torch', 'numpy'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", f"{imports}; {check}"], check=True, cwd=REPO_ROOT)
