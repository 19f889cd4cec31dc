#!/usr/bin/env bash
# Runs calico-ipam under Debian's real bridge plugin for two "pods" (network namespaces made
# here), shows their addresses, pings one from the other, then removes everything.
# Needs root, iproute2 and containernetworking-plugins. Usage: sudo bash examples/bridge-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p ipam-cni --bin calico-ipam
work=$(mktemp -d)
bin_dir="$work/bin"; mkdir -p "$bin_dir"
cp target/release/calico-ipam "$bin_dir/"
cleanup() {
  for p in demo-pod1 demo-pod2; do ip netns del "$p" 2>/dev/null || true; done
  ip link del cni-demo0 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/net.conf" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "demo-net",
  "type": "bridge",
  "bridge": "cni-demo0",
  "ipam": {
    "type": "calico-ipam",
    "ipv4_pools": ["10.244.0.0/16"],
    "nodename": "demo-node",
    "sled_path": "$work/store",
    "ipam_lock_file": "$work/ipam.lock",
    "log_file_path": "$work/cni.log"
  }
}
CONF

cni() { # cni COMMAND POD
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$2 CNI_IFNAME=eth0 \
  CNI_PATH="$bin_dir:/usr/lib/cni" /usr/lib/cni/bridge < "$work/net.conf"
}

for pod in demo-pod1 demo-pod2; do
  ip netns add "$pod"
  echo "== ADD $pod"; cni ADD "$pod"; echo
  ip -n "$pod" -4 addr show dev eth0 | sed 's/^/   /'
done
ip2=$(ip -n demo-pod2 -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
echo "== ping demo-pod1 -> demo-pod2 ($ip2)"
ip netns exec demo-pod1 ping -c 2 -W 2 "$ip2"
for pod in demo-pod1 demo-pod2; do echo "== DEL $pod"; cni DEL "$pod"; done
echo "== log"; cat "$work/cni.log"
