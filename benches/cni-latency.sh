#!/usr/bin/env bash
# ADD/DEL latency (median, p99) and 200 concurrent ADDs: calico-ipam with its node service
# (dynamically and statically linked), without it, and Debian's host-local, driven the same way
# in one run. Needs containernetworking-plugins (host-local). Usage: bash benches/cni-latency.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p ipam-cni -p ipamd -p ipam-benches --bin calico-ipam --bin calico-ipamd --bin cni-bench
bash packaging/build-release.sh >/dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
exec ./target/release/cni-bench "${1:-200}" "${HOST_LOCAL:-/usr/lib/cni/host-local}" "target/$host/release/calico-ipam"
