#!/usr/bin/env bash
# The seed's pod, on one machine: the `calico` main plugin with calico-ipam wires the pod
# "multitool" (namespace default) in a network namespace, inside a "host" namespace of its own
# (with an uplink and a default route, as a node has), then prints what the seed lab shows:
# the pod's `ip addr` and `ip route`, and the host's `ip route | grep <pod ip>`. A second pod
# answers a ping. Everything is removed at the end, also on failure.
# Needs root and iproute2. Usage: sudo bash examples/calico-pod-demo.sh
# PLUGIN_DIR=target/plugins runs the plugins as shipped (packaging/build-release.sh) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGIN_DIR=${PLUGIN_DIR:-target/release}
if [ "$PLUGIN_DIR" = target/release ]; then
  cargo build -q --release -p calico-cni -p ipam-cni --bin calico --bin calico-ipam
fi
work=$(mktemp -d)
TAG="demo$$"
HOST="$TAG-node"
cleanup() {
  ip netns del "$TAG-multitool" 2>/dev/null || true
  ip netns del "$TAG-web" 2>/dev/null || true
  ip netns del "$HOST" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/bin"
cp "$PLUGIN_DIR/calico" "$PLUGIN_DIR/calico-ipam" "$work/bin/"
ip netns add "$HOST"
ip -n "$HOST" link set lo up
ip -n "$HOST" link add up0 type veth peer name up1
ip -n "$HOST" addr add 192.0.2.1/24 dev up0
ip -n "$HOST" link set up0 up
ip -n "$HOST" link set up1 up
ip -n "$HOST" route add default via 192.0.2.254
ip netns exec "$HOST" sysctl -qw net.ipv4.ip_forward=1
conf="{\"cniVersion\": \"1.0.0\", \"name\": \"k8s-pod-network\", \"type\": \"calico\", \"mtu\": 1450,
 \"nodename\": \"pod-network-worker\", \"sled_path\": \"$work/store\", \"ipam_lock_file\": \"$work/ipam.lock\",
 \"log_file_path\": \"$work/cni.log\", \"log_level\": \"warn\", \"ipamd_socket\": \"$work/none.sock\",
 \"ipam\": {\"type\": \"calico-ipam\", \"ipv4_pools\": [\"192.168.0.0/16\"]}}"
add() { # add POD
  ip netns add "$TAG-$1"
  ip netns exec "$HOST" env -i PATH="$PATH" CNI_COMMAND=ADD CNI_CONTAINERID="$TAG-$1" \
    CNI_NETNS="/var/run/netns/$TAG-$1" CNI_IFNAME=eth0 CNI_PATH="$work/bin" \
    CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$1" "$work/bin/calico" <<<"$conf"
}
echo "== ADD multitool (the calico plugin's result)"
result=$(add multitool)
echo "$result"
ip=$(echo "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
echo
echo "== inside the pod: ip addr"
ip -n "$TAG-multitool" addr
echo "== inside the pod: ip route"
ip -n "$TAG-multitool" route
echo "== on the node: ip route | grep $ip"
ip -n "$HOST" route | grep "$ip"
echo "== on the node: ip addr | grep cali -A3"
ip -n "$HOST" addr | grep cali -A3
add web >/dev/null
web=$(ip -n "$TAG-web" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
echo "== ping from multitool to web ($web)"
ip netns exec "$TAG-multitool" ping -c 2 -W 2 "$web"
