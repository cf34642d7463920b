#!/usr/bin/env bash
# Run berth's whole test suite: unit tests, property tests, the store conformance suite against
# the embedded store and a real etcd, and the end-to-end tests on the real Docker daemon.
# Needs: Docker, `etcd` (Debian etcd-server), `protoc` (protobuf-compiler), busybox-static,
# openssl, iproute2, iptables and curl, and root (namespaced hosts, a tiny tmpfs):
# scripts/deps.sh installs what is missing (quiet when nothing is) and builds the local image.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"
scripts/deps.sh
python3 scripts/check-layers.py
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked -- --test-threads "${BERTH_TEST_THREADS:-4}"
