#!/usr/bin/env bash
# ADD/DEL latency (median, p99) and 200 concurrent ADDs: calico-ipam with its node service
# (dynamically linked, and statically against glibc and musl), without it, and Debian's
# host-local, driven the same way in one run. Needs containernetworking-plugins (host-local). Usage: bash benches/cni-latency.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p ipam-cni -p ipamd -p ipam-benches --bin calico-ipam --bin calico-ipamd --bin cni-bench
# Both static builds of the plugin, measured through the same service in the same run.
PLUGIN_LIBC=glibc bash packaging/build-release.sh >/dev/null
cp -f target/plugins/calico-ipam target/plugins/calico-ipam.glibc
bash packaging/build-release.sh >/dev/null
static=(glibc=target/plugins/calico-ipam.glibc)
if ! cmp -s target/plugins/calico-ipam target/plugins/calico-ipam.glibc; then
    static+=(musl=target/plugins/calico-ipam)
fi
exec ./target/release/cni-bench "${1:-200}" "${HOST_LOCAL:-/usr/lib/cni/host-local}" "${static[@]}"
