#!/usr/bin/env bash
# A rolling upgrade on etcd, by hand: an older build and this one on one prefix. The older
# build writes the cluster; this build joins and must keep it plain, so the older build still
# reads every record; after `ipamctl layout --set compressed` the older build cannot (unless
# it reads compressed records too); after `--set plain` it can again. Fails on any other
# outcome.
#
# Usage: bash packaging/mixed-builds.sh OLD_BIN_DIR NEW_BIN_DIR ETCD_URL
#   *_BIN_DIR: directories holding `calico-ipam` and `ipamctl` built with the etcd feature, e.g.
#   git worktree add /tmp/old e984d42 && (cd /tmp/old && cargo build --release \
#     -p ipamctl -p ipam-cni --features ipamctl/etcd,ipam-cni/etcd)
set -euo pipefail
old=$1 new=$2 etcd=$3
dir=$(mktemp -d)
prefix="/mixed-builds-$$/"
cleanup() {
    rm -rf "$dir"
    if command -v etcdctl > /dev/null; then
        etcdctl --endpoints "$etcd" del --prefix "$prefix" > /dev/null || true
    fi
}
trap cleanup EXIT
cat > "$dir/net.conf" <<CONF
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
 "datastore_type": "etcdv3", "etcd_endpoints": "$etcd", "etcd_prefix": "$prefix",
 "ipam": {"type": "calico-ipam", "nodename": "node-a", "ipv4_pools": ["10.244.0.0/16"],
          "ipamd_socket": "$dir/none.sock", "ipamd_autostart": false}}
CONF
# add BIN_DIR FROM TO: CNI ADDs of pods FROM..TO, on the store directly; fails on a failed ADD.
add() {
    for i in $(seq "$2" "$3"); do
        CNI_COMMAND=ADD CNI_CONTAINERID=$(printf '%064x' $((i * 7919 + 11))) \
        CNI_NETNS=/var/run/netns/p$i CNI_IFNAME=eth0 CNI_PATH=/nonexistent \
        CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-5d9c7b8f4-$i" \
            "$1/calico-ipam" < "$dir/net.conf" > "$dir/out" 2>&1 || { cat "$dir/out"; return 1; }
    done
}
ctl() { local bin=$1; shift; "$bin/ipamctl" --cni-config "$dir/net.conf" "$@"; }
expect() { echo "$2" | grep -q "$1" || { echo "FAILED: expected '$1' in: $2"; exit 1; }; }

echo "== the older build writes the cluster (5 pods), this build joins (40 pods)"
add "$old" 1 5
add "$new" 6 45
out=$(ctl "$new" layout); echo "$out"; expect "layout: plain" "$out"
out=$(ctl "$old" check); echo "older build's check: $out"; expect "no problems found" "$out"
echo "== ipamctl layout --set compressed"
out=$(ctl "$new" layout --set compressed); echo "$out"; expect "rewritten: [1-9]" "$out"
out=$(ctl "$old" check || true); echo "older build's check: $(echo "$out" | head -1), ..., $(echo "$out" | tail -1)"
if echo "$out" | grep -q "no problems found"; then
    echo "(the older build reads compressed records: it could have run beside compressed ones)"
else
    expect "does not decode" "$out"
    out=$(add "$old" 46 46 || true); expect '"code":102' "$out"
    echo "older build's ADD: $(echo "$out" | tail -1)"
fi
echo "== ipamctl layout --set plain (before going back)"
out=$(ctl "$new" layout --set plain); echo "$out"; expect "0 compressed" "$out"
out=$(ctl "$old" check); echo "older build's check: $out"; expect "no problems found" "$out"
add "$old" 47 47
echo "mixed builds: ok"
