#!/usr/bin/env bash
# Copies the googleapis protos our protos import out of the googleapis-common-protos wheel,
# so buf and protoc resolve them without the Buf registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
site=$("$py" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
dest=$root/build/protodeps
mkdir -p "$dest/google/api" "$dest/google/rpc"
for f in api/annotations.proto api/http.proto api/field_behavior.proto rpc/status.proto \
         rpc/error_details.proto rpc/code.proto; do
  cp "$site/google/$f" "$dest/google/$f"
done
