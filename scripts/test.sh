#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds and runs all
# tests (both storage backends; zfs-fuse is started for the run if it is not
# running), then the same tests under AddressSanitizer + UBSan, then each
# fuzz target briefly.
#
#   ./scripts/test.sh               # everything (what CI runs)
#   ./scripts/test.sh --quick       # release build tests only
#   FUZZ_SECONDS=60 ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
JOBS="$(nproc)"

./scripts/install.sh --deps

# One zfs-fuse daemon for the whole run, stopped (by its pid) at the end.
ZFS_PID=""
cleanup() {
  if [ -n "$ZFS_PID" ]; then
    kill "$ZFS_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ZFS_PID" 2>/dev/null || break; sleep 0.1; done
  fi
}
trap cleanup EXIT
if [ "$(id -u)" -eq 0 ] && [ -e /dev/fuse ] && command -v zfs-fuse >/dev/null && ! pgrep -x zfs-fuse >/dev/null; then
  pidfile="$(mktemp -u /tmp/hc-test-zfs-fuse.XXXXXX.pid)"
  zfs-fuse --no-kstat-mount --pidfile "$pidfile"
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  ZFS_PID="$(cat "$pidfile")"
  rm -f "$pidfile"
  echo "== started zfs-fuse (pid $ZFS_PID) for this run"
fi

total_pass=0; total_fail=0
run_suite() {  # build dir, extra cmake args...
  local dir="$1"; shift
  echo "== build $dir $*"
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
  echo "== test $dir"
  # A failing test must not hide the later suites: count, report at the end.
  (cd "$dir" && ctest --output-on-failure -j "$JOBS") | tee "$dir/ctest.log" || true
  local line failed all
  line=$(grep -o '[0-9]* tests failed out of [0-9]*' "$dir/ctest.log" | tail -1)
  failed=$(echo "${line:-1 tests failed out of 1}" | awk '{print $1}')
  all=$(echo "${line:-1 tests failed out of 1}" | awk '{print $NF}')
  total_pass=$((total_pass + all - failed))
  total_fail=$((total_fail + failed))
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$quick" = 1 ]; then
  echo "all: $total_pass passed, $total_fail failed"
  [ "$total_fail" = 0 ]; exit
fi

ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DHC_SANITIZE=ON -DHC_BENCH=OFF

echo "== fuzz targets (${FUZZ_SECONDS}s each)"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHC_FUZZ=ON -DHC_TESTS=OFF \
  -DHC_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$JOBS" --target fuzz_targets
fuzz_pass=0; fuzz_fail=0
rm -rf build-fuzz/tmp
for f in build-fuzz/fuzz/fuzz_*; do
  name="$(basename "$f")"
  corpus="build-fuzz/corpus/$name"; mkdir -p "$corpus" "tests/fuzz/corpus/$name"
  mkdir -p build-fuzz/tmp
  if TMPDIR="$PWD/build-fuzz/tmp" "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 "$corpus" "tests/fuzz/corpus/$name" \
       >"build-fuzz/$name.log" 2>&1; then
    echo "fuzz $name: ok ($(grep -o 'Done [0-9]* runs' "build-fuzz/$name.log" | grep -o '[0-9]*' || echo '?') inputs)"
    fuzz_pass=$((fuzz_pass + 1))
  else
    echo "fuzz $name: FAILED"; tail -40 "build-fuzz/$name.log"
    fuzz_fail=$((fuzz_fail + 1))
  fi
done
rm -rf build-fuzz/tmp
echo "fuzz targets: $fuzz_pass ok, $fuzz_fail crashed"
echo "all: $((total_pass + fuzz_pass)) passed, $((total_fail + fuzz_fail)) failed"
[ "$((total_fail + fuzz_fail))" = 0 ]
