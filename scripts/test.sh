#!/usr/bin/env bash
# Every test: installs what is missing (scripts/setup.sh), starts etcd on loopback (free ports,
# a temporary data directory, stopped on exit), then `cargo test --workspace --all-features`.
# The end-to-end tests need root; run as root to include them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ETCD_DIR="$(mktemp -d)"
ETCD_CLIENT="$(free_port)"
ETCD_PEER="$(free_port)"
etcd --name test --data-dir "$ETCD_DIR/data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "test=http://127.0.0.1:$ETCD_PEER" >"$ETCD_DIR/etcd.log" 2>&1 &
ETCD_PID=$!
trap 'kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; rm -rf "$ETCD_DIR"' EXIT
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$ETCD_CLIENT" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$ETCD_CLIENT" endpoint health
export IPAM_TEST_ETCD="http://127.0.0.1:$ETCD_CLIENT"
export IPAM_ETCD_REQUIRED=1

cargo test --workspace --all-features "$@"
