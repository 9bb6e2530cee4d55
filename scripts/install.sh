#!/usr/bin/env bash
# Installs everything HybridCluster needs on Debian 12 (apt packages by
# name), builds it, and installs `hc` and `hcd` into /usr/local/bin.
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
  libssl-dev libzstd-dev libxxhash-dev nlohmann-json3-dev libcli11-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev zstd tar procps bc
  # storage backends: ZFS through zfs-fuse here (OpenZFS in production)
  zfs-fuse fuse
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ "${1:-}" = "--deps" ] && exit 0

echo "== building (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target hc hcd
echo "== installing hc and hcd into /usr/local/bin"
$SUDO cmake --install build --prefix /usr/local >/dev/null
echo "== done: $(command -v hc) $(command -v hcd)"
