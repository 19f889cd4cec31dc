#!/usr/bin/env bash
# ADD and DEL latency of the `calico` main plugin beside Debian's `ptp`, both with calico-ipam
# through one node service, in one run: N pods each, in network namespaces this script makes
# (a host namespace of its own and one per pod), alternating calico and ptp calls so both see
# the same machine. Prints median and p99 per plugin and verb. Needs root, iproute2 and
# containernetworking-plugins. Usage: sudo bash benches/main-plugin-latency.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
cargo build -q --release -p calico-cni -p ipam-cni -p ipamd --bin calico --bin calico-ipam --bin calico-ipamd
T="$(mktemp -d)"
TAG="mpl$$"
HOST="$TAG-host"
BIN="$T/bin"
mkdir -p "$BIN"
cp target/release/calico target/release/calico-ipam "$BIN/"
cp /usr/lib/cni/ptp "$BIN/"
cleanup() {
  [ -n "${IPAMD:-}" ] && kill "$IPAMD" 2>/dev/null && wait "$IPAMD" 2>/dev/null || true
  for i in $(seq 0 $((N - 1))); do
    ip netns del "$TAG-c$i" 2>/dev/null || true
    ip netns del "$TAG-p$i" 2>/dev/null || true
  done
  ip netns del "$HOST" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
ip netns add "$HOST"
ip -n "$HOST" link set lo up
ip -n "$HOST" link add up0 type veth peer name up1
ip -n "$HOST" addr add 192.0.2.1/24 dev up0
ip -n "$HOST" link set up0 up; ip -n "$HOST" link set up1 up
ip -n "$HOST" route add default via 192.0.2.254
ip netns exec "$HOST" sysctl -qw net.ipv4.ip_forward=1
for i in $(seq 0 $((N - 1))); do ip netns add "$TAG-c$i"; ip netns add "$TAG-p$i"; done
target/release/calico-ipamd --sled-path "$T/store" --socket "$T/ipamd.sock" --log-level warn &
IPAMD=$!
for _ in $(seq 100); do [ -S "$T/ipamd.sock" ] && break; sleep 0.05; done
ipam() { printf '{"type":"calico-ipam","nodename":"bench","sled_path":"%s","ipamd_socket":"%s","ipam_lock_file":"%s","log_file_path":"none","ipv4_pools":["%s"]}' "$T/store" "$T/ipamd.sock" "$T/lock" "$1"; }
CALICO_CONF="{\"cniVersion\":\"1.0.0\",\"name\":\"calico-bench\",\"type\":\"calico\",\"mtu\":1450,\"ipam\":$(ipam 10.244.0.0/16)}"
PTP_CONF="{\"cniVersion\":\"1.0.0\",\"name\":\"ptp-bench\",\"type\":\"ptp\",\"mtu\":1450,\"ipam\":$(ipam 10.244.0.0/16)}"
now() { date +%s%N; }
# call PLUGIN VERB CID NETNS CONF -> appends "plugin verb ns" to the results
call() {
  local s e
  s=$(now)
  ip netns exec "$HOST" env -i PATH="$PATH" CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="/var/run/netns/$4" \
    CNI_IFNAME=eth0 CNI_PATH="$BIN" "$BIN/$1" <<<"$5" >/dev/null
  e=$(now)
  echo "$1 $2 $((e - s))" >>"$T/times"
}
for i in $(seq 0 $((N - 1))); do
  call calico ADD "c$i" "$TAG-c$i" "$CALICO_CONF"
  call ptp ADD "p$i" "$TAG-p$i" "$PTP_CONF"
done
for i in $(seq 0 $((N - 1))); do
  call calico DEL "c$i" "$TAG-c$i" "$CALICO_CONF"
  call ptp DEL "p$i" "$TAG-p$i" "$PTP_CONF"
done
# The exec of `ip netns exec` itself, measured the same way, for reference.
for i in $(seq 1 "$N"); do
  s=$(now); ip netns exec "$HOST" true; e=$(now); echo "netns-exec-true - $((e - s))" >>"$T/times"
done
echo "N=$N per plugin and verb; calico-ipam through calico-ipamd; times include 'ip netns exec'"
python3 - "$T/times" <<'PY'
import sys, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p, v, ns = line.split()
    d[(p, v)].append(int(ns) / 1e6)
def q(xs, f):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]
rows = {}
for (p, v), xs in sorted(d.items()):
    rows[(p, v)] = q(xs, .5)
    print(f"{p:16} {v:4} median {q(xs, .5):7.2f} ms  p99 {q(xs, .99):7.2f} ms")
for v in ("ADD", "DEL"):
    if ("calico", v) in rows and ("ptp", v) in rows:
        print(f"{v}: calico/ptp median ratio {rows[('calico', v)] / rows[('ptp', v)]:.2f}")
PY
