#!/usr/bin/env bash
# The process backend as an unprivileged user: no cgroups, so freeze is
# SIGSTOP, usage comes from /proc and the memory limit from polling. Runs the
# process half of the conformance suite as user nobody.
# Usage: unprivileged_test.sh path/to/runtime_conformance_test path/to/hc-shim
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "skipped: needs root to become another user"; exit 0; fi
command -v setpriv >/dev/null || { echo "skipped: setpriv (util-linux) missing"; exit 0; }
DIR="$(mktemp -d /tmp/hc-unpriv.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT
chmod 755 "$DIR"
# Copies: the build tree may sit where nobody cannot reach it (e.g. /root).
cp "$1" "$DIR/conformance"; cp "$2" "$DIR/hc-shim"
chmod 755 "$DIR/conformance" "$DIR/hc-shim"
cd "$DIR"
setpriv --reuid=65534 --regid=65534 --clear-groups \
  env HOME="$DIR" TMPDIR=/tmp HC_TEST_SHIM="$DIR/hc-shim" \
  "$DIR/conformance" --gtest_filter='*/process'
