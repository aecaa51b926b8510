#!/usr/bin/env bash
# The compose stage (`make test-compose`, and .ci/run after `make test`): builds the image and
# drives the real docker-compose.yml on podman, then runs tests/deploy's `compose` tests
# against it. Needs root; installs podman and the rest with apt-get when they are missing.
# Details and the reasons for each choice: docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
stage_start=$SECONDS

fail() { echo "compose stage: FAILED: $*" >&2; exit 1; }
step() { echo "== compose stage: $* ($((SECONDS - stage_start)) s)"; }

[ "$(id -u)" = 0 ] || fail "needs root (podman's rootful storage and networks)"
[ -x "$PYTHON" ] || fail "no $PYTHON: run \`make test\` (or make .venv) first"

needed=(podman runc debootstrap docker-compose uidmap slirp4netns netavark aardvark-dns)
missing=()
for package in "${needed[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]}"
fi

export CONTAINERS_CONF=$ROOT/.ci/compose/containers.conf
podman info >/dev/null 2>&1 || fail "podman cannot run here: $(podman info 2>&1 | tail -n 3)"

step "stand-in base images"
.ci/compose/standins.sh
podman run --rm docker.io/library/redis:7 true \
  || fail "podman cannot start a container here (see the error above)"

# docker-compose talks to podman's Docker-compatible API on a socket of this stage
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-backprop-compose}
run_dir=/run/backprop-compose
mkdir -p "$run_dir"
socket=$run_dir/podman.sock
rm -f "$socket"
podman system service --time=0 "unix://$socket" >"$run_dir/service.log" 2>&1 &
service_pid=$!
python3 .ci/compose/healthchecks.py "$COMPOSE_PROJECT_NAME" &
ticker_pid=$!
export DOCKER_HOST=unix://$socket
compose=(docker-compose -f "$ROOT/docker-compose.yml")
cleanup() {
  "${compose[@]}" --profile monitor down -v --remove-orphans >/dev/null 2>&1 || true
  kill "$ticker_pid" "$service_pid" 2>/dev/null || true
  # the images each build leaves untagged (old images, builder stages): the storage is kept
  podman image prune -f >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || fail "podman system service did not open $socket: $(cat "$run_dir/service.log")"

step "docker-compose build (the image of every role, and flower's)"
build_start=$SECONDS
"${compose[@]}" --profile monitor build >"$run_dir/build.log" 2>&1 \
  || { tail -n 40 "$run_dir/build.log"; fail "docker-compose build"; }
echo "build: $((SECONDS - build_start)) s"

step "every package imports inside the image"
modules=$("$PYTHON" - <<'PY'
from tests.test_image_packages import shipped_packages
print(" ".join(shipped_packages()))
PY
)
podman run --rm -i --no-healthcheck backprop-jobs:latest python - $modules <<'PY' || fail "a package does not import in the image"
import importlib
import pkgutil
import sys

for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for module in pkgutil.iter_modules(package.__path__, f"{name}."):
        if not module.name.endswith(".__main__"):  # a command, not a module: it would run
            importlib.import_module(module.name)
print(f"imported {len(sys.argv) - 1} packages and each of their modules")
PY

step "the scenario: pytest -m compose tests/deploy"
COMPOSE="docker-compose" "$PYTHON" -m pytest -m compose tests/deploy -p no:cacheprovider \
  -v -s --timeout 900
step "done"
