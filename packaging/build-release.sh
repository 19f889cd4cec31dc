#!/usr/bin/env bash
# Release binaries as shipped. The two plugins a runtime execs for every pod (calico-ipam,
# calico) are linked statically: no dynamic loader, no shared libraries to map and relocate.
# Against musl when its Rust target is installed (`rustup target add
# x86_64-unknown-linux-musl`): glibc's static start-up queries the CPU's caches with CPUID,
# which traps to the hypervisor on a VM and cost 0.27 ms of every exec here (docs/benchmarks.md,
# "The plugin's start-up"). Otherwise against glibc (static-pie), with a note saying so.
# The node service and ipamctl are long-lived or operator-run and stay dynamically linked
# (the etcd client resolves host names through the C library's resolver).
# Output: target/plugins/{calico-ipam,calico} and target/release/{calico-ipamd,ipamctl}.
# Usage: bash packaging/build-release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
arch=${host%%-*}
musl="$arch-unknown-linux-musl"
if [ "${PLUGIN_LIBC:-musl}" = musl ] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    target=$musl
    # musl targets link statically by default.
    cargo build --release --target "$target" -p ipam-cni -p calico-cni --bin calico-ipam --bin calico
else
    target=$host
    [ "${PLUGIN_LIBC:-musl}" = musl ] && echo "note: the $musl target is not installed; linking the plugins statically against glibc" >&2
    # An explicit --target keeps the flag off build scripts and proc-macros, which cannot be static.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --target "$target" -p ipam-cni -p calico-cni \
        --bin calico-ipam --bin calico
fi
cargo build --release -p ipamd -p ipamctl --bin calico-ipamd --bin ipamctl
mkdir -p target/plugins
for b in calico-ipam calico; do
    built="target/$target/release/$b"
    file "$built" 2>/dev/null | grep -q 'static' ||
        ldd "$built" 2>&1 | grep -q 'statically linked' ||
        { echo "$built is not statically linked" >&2; exit 1; }
    cp -f "$built" "target/plugins/$b.tmp" && mv -f "target/plugins/$b.tmp" "target/plugins/$b"
done
echo "plugins ($target): target/plugins/{calico-ipam,calico}; service and CLI: target/release/{calico-ipamd,ipamctl}"
