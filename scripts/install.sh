#!/usr/bin/env bash
# Installs everything HybridCluster needs on Debian 12 (apt packages by
# name), builds it, and installs `hc`, `hc-shim` and `hcd` into /usr/local/bin.
# This script is the single source of what the project installs; CI and the
# test script call it too.
#
#   sudo ./scripts/install.sh            # packages + build + install
#   sudo ./scripts/install.sh --deps     # packages only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  build-essential cmake ninja-build ccache pkg-config git
  clang libclang-rt-14-dev clang-format clang-tidy
  # libraries
  libssl-dev libzstd-dev libxxhash-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev zstd tar procps bc
  # network partitions in the chaos tests (ip netns, veth, bridge)
  iproute2
  # storage backends: ZFS through zfs-fuse here (OpenZFS in production)
  zfs-fuse fuse
  # app runtime: containers, their init, and what the templates run
  runc tini busybox libnss-wrapper postgresql mariadb-server
  # cluster state store
  etcd-server etcd-client
  # DNS: a real client, and the peers the DNS server is compared with
  bind9-dnsutils nsd knot dnsperf
  # real clients used by tests and benchmarks
  curl openssl postgresql-client mariadb-client python3
  # a WebSocket client and server library (the proxy tests use both)
  python3-websocket python3-websockets
  # HTTP: the proxy's peers and load generator
  nginx-light haproxy wrk
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  # The database packages would start their system-wide servers; HybridCluster
  # runs them per app instead, so service starts are refused during the install.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$policy_added" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
[ "${1:-}" = "--deps" ] && exit 0

echo "== building (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target hc hcd hc-shim
echo "== installing hc, hc-shim and hcd into /usr/local/bin"
$SUDO cmake --install build --prefix /usr/local >/dev/null
echo "== done: $(command -v hc) $(command -v hcd)"
