#!/usr/bin/env bash
# The three-node lab on one Linux machine: etcd on loopback as the shared datastore, three
# "nodes" (control-plane, worker, worker2: distinct node names), pods as network namespaces
# started through the real ptp plugin with calico-ipam, the default pool 192.168.0.0/16 cut into
# /26 blocks. Prints each node's blocks, each pod's address, the pod's `ip addr` and
# `ip route`, the host-side route to the pod, pings between two pods of one node, and removes
# everything it created.
#
# Needs root, iproute2, iputils-ping, containernetworking-plugins, etcd-server and protoc
# (Debian: apt-get install containernetworking-plugins iproute2 iputils-ping etcd-server
# protobuf-compiler). Usage: sudo bash examples/lab/run.sh [PODS_PER_NODE]
set -euo pipefail
cd "$(dirname "$0")/../.."
PODS=${1:-2}
NODES=(control-plane worker worker2)

echo "== building calico-ipam and ipamctl (with the etcd store)"
cargo build -q --release --features etcd -p ipam-cni --bin calico-ipam
cargo build -q --release --features etcd -p ipamctl --bin ipamctl

work=$(mktemp -d)
mkdir -p "$work/bin"
cp target/release/calico-ipam "$work/bin/"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
client=$(free_port); peer=$(free_port)
etcd_pid=""
pods=()
cleanup() {
  set +e
  for p in "${pods[@]}"; do
    node=${p%%/*}; pod=${p##*/}
    cni DEL "$node" "$pod" >/dev/null 2>&1
    ip netns del "lab-$pod" 2>/dev/null
  done
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  rm -rf "$work"
  echo "== cleaned up: namespaces, host routes, etcd and its data removed"
}
trap cleanup EXIT

echo "== etcd on 127.0.0.1:$client"
etcd --name lab --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "lab=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$client" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done

conf() { # conf NODE: the network config each node's runtime would use
  cat <<CONF
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp",
 "nodename": "$1", "datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:$client",
 "ipam_lock_file": "$work/$1.lock", "log_file_path": "$work/cni.log", "log_level": "warn",
 "ipamd_socket": "$work/no-service.sock",
 "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}}
CONF
}
cni() { # cni COMMAND NODE POD
  conf "$2" | CNI_COMMAND=$1 CNI_CONTAINERID="$3" CNI_NETNS="/var/run/netns/lab-$3" CNI_IFNAME=eth0 \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3" \
    CNI_PATH="$work/bin:/usr/lib/cni" /usr/lib/cni/ptp
}

for node in "${NODES[@]}"; do
  for i in $(seq "$PODS"); do
    pod="$node-pod$i"
    ip netns add "lab-$pod"
    pods+=("$node/$pod")
    addr=$(cni ADD "$node" "$pod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"])')
    printf '%-22s on %-14s %s\n' "$pod" "$node" "$addr"
  done
done

conf control-plane > "$work/net.conf"
echo
echo "== blocks by node (ipamctl show --blocks)"
target/release/ipamctl --cni-config "$work/net.conf" show --blocks
echo
first="${NODES[1]}-pod1"
echo "== inside pod $first: ip addr"
ip -n "lab-$first" addr show eth0
echo "== inside pod $first: ip route"
ip -n "lab-$first" route
pod_ip=$(ip -n "lab-$first" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
echo "== on the host: the route to $pod_ip"
ip route get "$pod_ip"
ip route show "$pod_ip"
if [ "$PODS" -ge 2 ]; then
  second="${NODES[1]}-pod2"
  ip2=$(ip -n "lab-$second" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
  echo "== ping $first -> $second ($ip2), two pods on node ${NODES[1]}"
  ip netns exec "lab-$first" ping -c 2 -W 2 "$ip2"
fi
echo
echo "== consistency (ipamctl check)"
target/release/ipamctl --cni-config "$work/net.conf" check
