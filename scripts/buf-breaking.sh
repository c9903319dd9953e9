#!/usr/bin/env bash
# `buf breaking` against the protos of the main that came before this change.
# The baseline is $BUF_AGAINST, else the newest commit older than 3 hours (a working session
# is shorter than that, so it is the last main before the session); skipped when that commit
# has no protos yet.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
against=${BUF_AGAINST:-$(git rev-list -1 --before='3 hours ago' HEAD 2>/dev/null || true)}
if [ -z "$against" ] || ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: no earlier main with protos; skipped"
  exit 0
fi
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add --detach "$tmp/base" "$against" >/dev/null 2>&1
mkdir -p "$tmp/base/build"
cp -r build/protodeps "$tmp/base/build/protodeps"
echo "buf breaking against $(git rev-parse --short "$against")"
.venv/bin/buf breaking --against "$tmp/base"
