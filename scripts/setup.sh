#!/usr/bin/env bash
# Installs what the build and the tests need beyond cargo, on Debian, when missing:
# protoc (etcd client), etcd (etcd tests), iproute2, ping and the CNI plugins (end-to-end
# tests). Needs root when something is missing.
set -euo pipefail
if { [ -x /usr/lib/cni/bridge ] && command -v ip && command -v ping && command -v etcd \
     && command -v etcdctl && command -v protoc && command -v openssl && command -v bird && command -v promtool; } >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins iproute2 \
  iputils-ping etcd-server etcd-client protobuf-compiler openssl bird2 prometheus >/dev/null
