#!/usr/bin/env bash
# Install what building, testing and running berth needs on a Debian machine, and only what is
# missing: quiet (no output) when everything is already there. Shared by .ci/run,
# scripts/test.sh and scripts/demo.sh.
#   scripts/deps.sh [--demo]    --demo: only what the demo needs (no etcd, no browser test)
#   scripts/deps.sh --check     print what is missing, install nothing (exit 1 if anything is)
# Docker itself is not installed here: the machine is expected to have it.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-all}"
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)   # etcd-client's build
command -v git >/dev/null || need+=(git)
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then need+=(busybox-static); fi   # the local image
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)       # demo.sh reads the API's JSON
command -v cc >/dev/null || need+=(build-essential)
if [ "$mode" != "--demo" ]; then
  command -v etcd >/dev/null || need+=(etcd-server)          # store conformance, HA tests
  command -v chromedriver >/dev/null || need+=(chromium chromium-driver)   # dashboard browser test
  command -v openssl >/dev/null || need+=(openssl)     # TLS certificates for the etcd TLS test
  command -v ip >/dev/null || need+=(iproute2)         # namespaced test hosts
  command -v iptables >/dev/null || need+=(iptables)
  command -v docker-registry >/dev/null || need+=(docker-registry)   # tests/registry_pull.rs: a private registry
  command -v htpasswd >/dev/null || need+=(apache2-utils)           # its bcrypt htpasswd file
  # tests/helm_chart.rs renders the chart with PyPI's helm-python-sdk in a venv
  python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
fi

if [ "$mode" = "--check" ]; then
  if [ "${#need[@]}" -gt 0 ]; then
    echo "missing: ${need[*]}"
    exit 1
  fi
  exit 0
fi

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    :   # installed, not on PATH: the callers add it
  else
    echo "installing: the Rust toolchain (rustup, stable)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal --component clippy,rustfmt >/dev/null
  fi
fi

if ! docker info >/dev/null 2>&1; then
  echo "error: no Docker daemon is reachable; berth runs its tasks on Docker (install docker.io and start it)" >&2
  exit 1
fi

# Real ECS clients for tests/ecs_api.rs (boto3 and the aws CLI, from PyPI).
if [ "$mode" != "--demo" ]; then
  if ! python3 -c "import boto3" 2>/dev/null || ! command -v aws >/dev/null; then
    echo "installing: boto3 awscli (PyPI)"
    python3 -m pip install -q boto3 awscli 2>/dev/null \
      || python3 -m pip install -q --break-system-packages boto3 awscli
  fi
fi

# The demo/test image, built locally (no registry).
docker image inspect local/busybox:1 >/dev/null 2>&1 || scripts/build-image.sh
