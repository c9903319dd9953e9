#!/usr/bin/env bash
# Fails when the committed generated code differs from what scripts/genproto.sh makes now.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/genproto.sh" "$tmp"
status=0
while IFS= read -r f; do
  rel=${f#"$tmp"/}
  if ! cmp -s "$f" "$root/$rel"; then
    echo "stale generated file: $rel (run: make proto)"; status=1
  fi
done < <(find "$tmp" -type f \( -name '*_pb2*.py' -o -name '*_pb2.pyi' \))
while IFS= read -r f; do
  [ -f "$tmp/$f" ] || { echo "generated file without a proto: $f"; status=1; }
done < <(cd "$root" && find comfyfleet -path '*/v1/*' \( -name '*_pb2*.py' -o -name '*_pb2.pyi' \))
exit $status
