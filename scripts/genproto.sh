#!/usr/bin/env bash
# Generates the Python code for protos/ into comfyfleet/<area>/v1/ (stubs and .pyi).
# Usage: scripts/genproto.sh [OUT_DIR]   (default: the repository root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
out=${1:-$root}
"$root/scripts/protodeps.sh"
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
cd "$root/protos"
mapfile -t files < <(find comfyfleet -name '*.proto' | LC_ALL=C sort)
"$py" -m grpc_tools.protoc -I . -I "$root/build/protodeps" -I "$wkt" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${files[@]}"
# Every generated folder is a package, so mypy and setuptools see it.
for f in "${files[@]}"; do
  d=$(dirname "$f")
  while [ "$d" != "." ] && [ "$d" != "comfyfleet" ]; do
    touch "$out/$d/__init__.py"
    d=$(dirname "$d")
  done
done
