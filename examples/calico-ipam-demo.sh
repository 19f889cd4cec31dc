#!/usr/bin/env bash
# The main job: allocate pod addresses through the calico-ipam CNI plugin on the embedded sled
# store, as a container runtime would (CNI environment + network config on stdin), for pods on
# three nodes of the default pool 192.168.0.0/16; then show each node's /26 blocks.
# No root needed: IPAM touches no interface. Usage: bash examples/calico-ipam-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p ipam-cni --bin calico-ipam
cargo build -q --release -p ipam-store --example show_store
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

conf() { # conf NODE
  cat <<CONF
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
 "nodename": "$1", "sled_path": "$work/store", "ipam_lock_file": "$work/ipam.lock",
 "log_file_path": "$work/cni.log", "log_level": "warn",
 "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}}
CONF
}

for node in control-plane worker worker2; do
  for pod in 1 2 3; do
    id="$node-pod$pod"
    printf '%-22s ' "ADD $id:"
    conf "$node" | CNI_COMMAND=ADD CNI_CONTAINERID="$id" CNI_NETNS=/var/run/netns/"$id" \
      CNI_IFNAME=eth0 CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$id" \
      ./target/release/calico-ipam
    echo
  done
done
echo "DEL worker-pod2:"
conf worker | CNI_COMMAND=DEL CNI_CONTAINERID=worker-pod2 CNI_IFNAME=eth0 ./target/release/calico-ipam
echo
./target/release/examples/show_store "$work/store"
