#!/usr/bin/env bash
# Release binaries as shipped. The two plugins a runtime execs for every pod (calico-ipam,
# calico) are linked statically: no dynamic loader, no shared libraries to map and relocate,
# which takes a measurable share of each call (docs/benchmarks.md, "Where an ADD's time goes").
# The node service and ipamctl are long-lived or operator-run and stay dynamically linked
# (the etcd client resolves host names through the C library's resolver).
# Output: target/<host triple>/release/{calico-ipam,calico} and target/release/{calico-ipamd,ipamctl}.
# Usage: bash packaging/build-release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps the flag off build scripts and proc-macros, which cannot be static.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$host" -p ipam-cni -p calico-cni \
    --bin calico-ipam --bin calico
cargo build --release -p ipamd -p ipamctl --bin calico-ipamd --bin ipamctl
for b in calico-ipam calico; do
    file "target/$host/release/$b" 2>/dev/null | grep -q 'static' ||
        ldd "target/$host/release/$b" 2>&1 | grep -q 'statically linked' ||
        { echo "target/$host/release/$b is not statically linked" >&2; exit 1; }
done
echo "plugins: target/$host/release/{calico-ipam,calico}; service and CLI: target/release/{calico-ipamd,ipamctl}"
