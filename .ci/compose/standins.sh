#!/usr/bin/env bash
# Stand-ins for the base images that docker-compose.yml and the Dockerfile name, built from
# Debian packages (no image registry is reachable here) and tagged with those exact names:
# python:3.11-slim, postgres:16, redis:7. One debootstrap'd bookworm rootfs is imported as
# their base. Each image carries a label with the hash of its recipe; an image whose label
# matches is kept, so a machine that keeps podman's storage builds them once.
set -euo pipefail
cd "$(dirname "$0")"

LABEL=org.backprop-jobs.recipe
SUITE=bookworm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Debian's mirrors as this machine's apt sources name them (deb822 .sources or one-line .list)
mirror_for() {
  local suite=$1
  awk -v suite="$suite" '
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uri; exit } }
    /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^(http|https):/) { u = $i; if ($(i+1) == suite) { print u; exit } } }
  ' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -n 1
}
MIRROR=$(mirror_for "$SUITE")
SECURITY=$(mirror_for "$SUITE-security")
: "${MIRROR:?no Debian $SUITE mirror in /etc/apt/sources.list.d}"

recipe_hash() {  # the hash of everything that goes into an image: files and words
  { cat "$@" 2>/dev/null; echo "$MIRROR $SECURITY $SUITE"; } | sha256sum | cut -c1-16
}

current() {  # current IMAGE HASH: the image exists and was built from this recipe
  [ "$(podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null)" = "$2" ]
}

# the base: debootstrap --variant=minbase, plus what Debian's official images add
base_hash=$(recipe_hash standins.sh)
BASE=localhost/backprop-standin-$SUITE:$base_hash
if current "$BASE" "$base_hash"; then
  echo "stand-in base $BASE: cached"
else
  start=$SECONDS
  rootfs=$work/rootfs
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log"; exit 1; }
  {
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [ -z "$SECURITY" ] || echo "deb $SECURITY $SUITE-security main"
  } >"$rootfs/etc/apt/sources.list"
  # services never start during a build; no recommends, no docs
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/90no-recommends"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet \
    --change "LABEL $LABEL=$base_hash" --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >/dev/null
  echo "stand-in base $BASE: built in $((SECONDS - start)) s"
fi

# the files each image copies in; python's: the machine's CA bundle and pip settings
cp standins/*-entrypoint.sh "$work/"
cp /etc/ssl/certs/ca-certificates.crt "$work/ca-certificates.crt"
{
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  for key in index-url timeout default-timeout; do
    value=$(pip config get "global.$key" 2>/dev/null || true)
    [ -z "$value" ] || echo "$key = $value"
  done
  # extra indexes that a container can reach (http/https); file:// ones stay on the host
  extra=$(pip config get global.extra-index-url 2>/dev/null | tr ' ' '\n' | grep -E '^https?://' || true)
  [ -z "$extra" ] || echo "extra-index-url = $(echo $extra)"
} >"$work/pip.conf"

build() {  # build NAME CONTAINERFILE [FILES...]: the stand-in tagged NAME, unless current
  local name=$1 containerfile=$2
  shift 2
  local hash
  hash=$(recipe_hash "$containerfile" "$@" standins.sh)
  if current "docker.io/library/$name" "$hash"; then
    echo "stand-in $name: cached"
    return
  fi
  local start=$SECONDS
  # the name a Docker client means (docker.io/library/...) and the short one podman gives
  podman build --quiet --build-arg "BASE=$BASE" --label "$LABEL=$hash" \
    -f "$containerfile" -t "docker.io/library/$name" -t "$name" "$work" >/dev/null
  echo "stand-in $name: built in $((SECONDS - start)) s"
}

build python:3.11-slim standins/python.Containerfile "$work/ca-certificates.crt" "$work/pip.conf"
build postgres:16 standins/postgres.Containerfile standins/postgres-entrypoint.sh
build redis:7 standins/redis.Containerfile standins/redis-entrypoint.sh

# older recipes' bases lose their names; `podman image prune` (end of the stage) removes them
podman images --format '{{.Repository}}:{{.Tag}}' "localhost/backprop-standin-$SUITE" \
  | grep -vx "$BASE" | xargs -r -n 1 podman untag >/dev/null 2>&1 || true
