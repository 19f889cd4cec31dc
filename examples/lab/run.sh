#!/usr/bin/env bash
# The seed's three-node lab on one Linux machine, for real: a "fabric" network namespace
# holding a Linux bridge (172.18.0.1/16, as kind's network) and etcd listening on it; three node
# namespaces (control-plane 172.18.0.4, worker 172.18.0.3, worker2 172.18.0.2) attached to the
# bridge, each running its own calico-ipamd with the route agent on (and BIRD in bgp mode);
# pods as network namespaces wired by the `calico` main plugin inside their node's namespace,
# from the pool 192.168.0.0/16 in /26 blocks. Prints the blocks per node, a pod's `ip addr`
# and `ip route`, a node's `ip route`, and pings from a pod on worker to pods on control-plane
# and worker2. With --converge N it then measures route convergence: N blocks claimed on
# control-plane, the time until each is routed on worker and worker2 (p50, p99).
# Everything it creates is removed at the end, also on failure.
#
# Needs root, iproute2, iputils-ping, etcd-server, etcd-client, protobuf-compiler, and bird2 for
# bgp mode. Usage: sudo bash examples/lab/run.sh [direct|bgp] [PODS_PER_NODE] [--converge N]
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-direct}
PODS=${2:-2}
CONVERGE=0
if [ "${3:-}" = "--converge" ]; then CONVERGE=${4:-100}; fi
case "$MODE" in direct | bgp) ;; *) echo "mode: direct or bgp" >&2; exit 2 ;; esac
NODES=(control-plane worker worker2)
ADDRS=(172.18.0.4 172.18.0.3 172.18.0.2)
ETCD=http://172.18.0.1:2379

echo "== building calico, calico-ipam, calico-ipamd and ipamctl (with the etcd store)"
cargo build -q --release -p calico-cni -p ipam-cni -p ipamd -p ipamctl \
  --features calico-cni/etcd,ipam-cni/etcd,ipamd/etcd,ipamctl/etcd
work=$(mktemp -d)
BIN="$work/bin"
mkdir -p "$BIN"
cp target/release/calico target/release/calico-ipam target/release/calico-ipamd target/release/ipamctl "$BIN/"
TAG="lab$$"
FABRIC="$TAG-fabric"
pids=()
netns=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$work"
  echo "== cleaned up: services, BIRD, etcd, namespaces (and with them every link and route)"
}
trap cleanup EXIT
node_ns() { echo "$TAG-${NODES[$1]}"; }

echo "== fabric: bridge br0 172.18.0.1/16 and etcd on $ETCD"
ip netns add "$FABRIC"; netns+=("$FABRIC")
ip -n "$FABRIC" link set lo up
ip -n "$FABRIC" link add br0 type bridge
ip -n "$FABRIC" addr add 172.18.0.1/16 dev br0
ip -n "$FABRIC" link set br0 up
ip netns exec "$FABRIC" etcd --name lab --data-dir "$work/etcd" \
  --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster lab=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
pids+=($!)

conf() { # conf NODE_INDEX
  cat <<CONF
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "mtu": 1450,
 "nodename": "${NODES[$1]}", "datastore_type": "etcdv3", "etcd_endpoints": "$ETCD",
 "ipamd_socket": "$work/${NODES[$1]}.sock", "ipam_lock_file": "$work/${NODES[$1]}.lock",
 "log_file_path": "$work/${NODES[$1]}-cni.log",
 "ipam": {"type": "calico-ipam", "ipv4_pools": ["192.168.0.0/16"]}}
CONF
}
ctl() { conf 0 >"$work/ctl.conf"; ip netns exec "$FABRIC" "$BIN/ipamctl" --cni-config "$work/ctl.conf" --socket /nonexistent "$@"; }

for i in 0 1 2; do
  ns=$(node_ns $i)
  ip netns add "$ns"; netns+=("$ns")
  ip -n "$FABRIC" link add "v$i" type veth peer name eth0 netns "$ns"
  ip -n "$FABRIC" link set "v$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "${ADDRS[$i]}/16" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via 172.18.0.1
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
done
for _ in $(seq 100); do
  ip netns exec "$(node_ns 0)" etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
ctl pool add default-ipv4-ippool 192.168.0.0/16 --block-size 26 >/dev/null

echo "== one calico-ipamd per node, route agent: $MODE"
for i in 0 1 2; do
  ns=$(node_ns $i)
  extra=()
  [ "$MODE" = bgp ] && extra=(--bird-config "$work/bird-$i.conf" --bird-socket "$work/bird-$i.ctl")
  ip netns exec "$ns" "$BIN/calico-ipamd" --etcd-endpoints "$ETCD" --socket "$work/${NODES[$i]}.sock" \
    --node-name "${NODES[$i]}" --node-address-autodetect interface=eth0 --routes "$MODE" \
    --log-level warn "${extra[@]}" 2>>"$work/ipamd-$i.log" &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 200); do [ -S "$work/${NODES[$i]}.sock" ] && break; sleep 0.05; done
  if [ "$MODE" = bgp ]; then
    for _ in $(seq 200); do [ -f "$work/bird-$i.conf" ] && break; sleep 0.05; done
    ip netns exec "$(node_ns $i)" bird -f -c "$work/bird-$i.conf" -s "$work/bird-$i.ctl" -P "$work/bird-$i.pid" &
    pids+=($!)
  fi
done

add_pod() { # add_pod NODE_INDEX NAME -> prints the address (the namespace exists already)
  local ns="$TAG-$2"
  conf "$1" | ip netns exec "$(node_ns "$1")" env -i PATH="$PATH" CNI_COMMAND=ADD CNI_CONTAINERID="$ns" \
    CNI_NETNS="/var/run/netns/$ns" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
    CNI_ARGS="K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2" "$BIN/calico" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])'
}
declare -A IP
echo "== pods"
for i in 0 1 2; do
  for k in $(seq 1 "$PODS"); do
    name="${NODES[$i]}-pod$k"
    ip netns add "$TAG-$name"; netns+=("$TAG-$name")
    IP[$name]=$(add_pod "$i" "$name")
    printf '%-22s %s\n' "$name" "${IP[$name]}"
  done
done
wait_route() { # wait_route NODE_INDEX DST -> waits until the node routes DST by block
  for _ in $(seq 300); do
    ip -n "$(node_ns "$1")" route show proto "$([ "$MODE" = bgp ] && echo bird || echo 80)" | grep -q "$2" && return 0
    sleep 0.02
  done
  return 1
}
for i in 0 1 2; do for j in 0 1 2; do
  [ "$i" = "$j" ] && continue
  wait_route "$i" "via ${ADDRS[$j]}" || { echo "node ${NODES[$i]} never got a route to ${NODES[$j]}'s block"; exit 1; }
done; done

echo; echo "== ipamctl show --blocks"
ctl show --blocks
echo; echo "== ipamctl show --routes --node worker"
ctl show --routes --node worker
pod="$TAG-worker-pod1"
echo; echo "== pod worker-pod1: ip addr"
ip -n "$pod" addr
echo "== pod worker-pod1: ip route"
ip -n "$pod" route
echo; echo "== node worker: ip route"
ip -n "$(node_ns 1)" route
echo
for target in control-plane-pod1 worker2-pod1; do
  echo "== ping from worker-pod1 to $target (${IP[$target]})"
  ip netns exec "$pod" ping -c 2 -W 2 "${IP[$target]}"
done

if [ "$CONVERGE" -gt 0 ]; then
  echo; echo "== convergence: $CONVERGE blocks claimed on control-plane, time until routed on worker and worker2"
  ctl pool add converge 10.100.0.0/16 --block-size 32 >/dev/null
  cconf=$(conf 0 | sed 's#"ipv4_pools": \["192.168.0.0/16"\]#"ipv4_pools": ["converge"]#')
  : >"$work/converge"
  cni_conv() { # cni_conv VERB ID
    echo "$cconf" | ip netns exec "$(node_ns 0)" env -i CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
      CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 "$BIN/calico-ipam"
  }
  for k in $(seq 1 "$CONVERGE"); do
    # With /32 blocks every address is a new block: its claim commits before ADD returns.
    out=$(cni_conv ADD "conv$k")
    s=$(date +%s%N)
    [[ $out =~ \"address\":\"([0-9.]+)/ ]] || { echo "ADD failed: $out"; exit 1; }
    ip=${BASH_REMATCH[1]}
    for j in 1 2; do
      wait_route "$j" "^$ip via" || { echo "no route to $ip on ${NODES[$j]}"; exit 1; }
      e=$(date +%s%N)
      echo $(((e - s) / 1000)) >>"$work/converge"
    done
    # Give the block back (a node holds at most 20 blocks): free the address, release it.
    cni_conv DEL "conv$k" >/dev/null
    ctl node release-block control-plane "$ip/32" >/dev/null
  done
  python3 - "$work/converge" "$MODE" <<'PY'
import sys
xs = sorted(int(l) / 1000 for l in open(sys.argv[1]))
q = lambda f: xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]
print(f"{sys.argv[2]}: {len(xs)} routes (claims x 2 nodes): p50 {q(.5):.1f} ms, p99 {q(.99):.1f} ms, max {xs[-1]:.1f} ms")
PY
fi
