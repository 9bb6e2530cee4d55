#!/usr/bin/env bash
# Authoritative DNS: ours against NSD and Knot serving the same zones, with
# dnsperf on the same machine (../shared/BENCHMARKING.md: one serving
# worker each, rate limiting off, server pinned to CPU 0 and dnsperf to
# CPU 1). The zones are a synthetic cluster's (3 nodes, APPS apps with a
# domain each, every other one with an alias) as `hc dns show` prints them;
# the query mix is 5 A : 1 AAAA (NODATA) : 0.5 alias (CNAME + A) : 1 NXDOMAIN
# per app.
#
# dnsperf on one core saturates before the servers do, so besides queries/s
# the figure to compare is server CPU time per answered query.
#
#   bench/dns_bench.sh [BUILD_DIR]     env: RUNS=3 SECS=10 APPS=1000 CLIENTS=10
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
RUNS=${RUNS:-3} SECS=${SECS:-10} APPS=${APPS:-1000} CLIENTS=${CLIENTS:-10}
server_bin="$build/bench/dns_bench_server"
[ -x "$server_bin" ] || { echo "build it first: cmake --build $build --target dns_bench_server" >&2; exit 2; }
for p in dnsperf nsd knotd dig; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
    { echo "$p is missing: sudo scripts/install.sh --deps" >&2; exit 2; }
done
# shellcheck source=bench/dns_peers.sh
source bench/dns_peers.sh

work=$(mktemp -d /tmp/hc-dns-bench-XXXXXX)
ours_pid="" peer_pid=""
cleanup() {
  [ -n "$ours_pid" ] && kill -TERM "$ours_pid" 2>/dev/null && wait "$ours_pid" 2>/dev/null
  [ -n "$peer_pid" ] && dns_peer_stop "$peer_pid"
  rm -rf "$work"
}
trap cleanup EXIT

declare -A QPS CPU LAT
measure() {  # NAME ADDR PID
  local name=$1 addr=$2 pid=$3 line qps=() cpu=() lat=()
  dns_perf "$addr" 10053 "$work/queries.txt" 2 "$CLIENTS" >/dev/null  # warm-up
  for r in $(seq 1 "$RUNS"); do
    line=$(DNS_SERVER_PID=$pid dns_perf "$addr" 10053 "$work/queries.txt" "$SECS" "$CLIENTS")
    echo "  $name run $r: $line"
    qps+=("$(sed 's/.*qps=\([0-9.]*\).*/\1/' <<<"$line")")
    cpu+=("$(sed 's/.*cpu_us_per_query=\([0-9.]*\).*/\1/' <<<"$line")")
    lat+=("$(sed 's/.*avg_ms=\([0-9.]*\).*/\1/' <<<"$line")")
  done
  QPS[$name]=$(printf '%s\n' "${qps[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  CPU[$name]=$(printf '%s\n' "${cpu[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  LAT[$name]=$(printf '%s\n' "${lat[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
}

echo "== ours: dns_bench_server, 1 UDP worker, $APPS apps"
# shellcheck disable=SC2046
$(_dns_taskset "${DNS_SERVER_CPUS-0}") "$server_bin" --out "$work" \
  --listen 127.0.0.81:10053 --apps "$APPS" --workers 1 >"$work/ours.log" 2>&1 &
ours_pid=$!
for _ in $(seq 1 100); do
  dig +short +time=1 +tries=1 -p 10053 @127.0.0.81 customer.org SOA 2>/dev/null | grep -q ns1 && break
  sleep 0.1
done
head -1 "$work/ours.log"
measure ours 127.0.0.81 "$ours_pid"
kill -TERM "$ours_pid"; wait "$ours_pid" || true; ours_pid=""
tail -1 "$work/ours.log"

zones=(hosting.example.net "$work/hosting.example.net.zone" customer.org "$work/customer.org.zone")
echo "== NSD $(nsd -v 2>&1 | head -1 | awk '{print $3}'), server-count 1"
peer_pid=$(dns_peer_start_nsd "$work/nsd" 127.0.0.82 10053 "${zones[@]}")
measure nsd 127.0.0.82 "$peer_pid"
dns_peer_stop "$peer_pid"; peer_pid=""

echo "== Knot $(knotd --version 2>&1 | awk '{print $NF}'), 1 UDP worker"
peer_pid=$(dns_peer_start_knot "$work/knot" 127.0.0.83 10053 "${zones[@]}")
measure knot 127.0.0.83 "$peer_pid"
dns_peer_stop "$peer_pid"; peer_pid=""

echo
echo "DNS, $APPS apps, dnsperf $CLIENTS clients, median of $RUNS x ${SECS}s ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf '%-6s %12s %14s %16s\n' server "queries/s" "avg latency" "CPU per query"
for s in ours nsd knot; do
  printf '%-6s %12s %11s ms %13s us\n' "$s" "${QPS[$s]}" "${LAT[$s]}" "${CPU[$s]}"
done
awk -v q="${QPS[ours]}" -v n="${QPS[nsd]}" -v k="${QPS[knot]}" -v cq="${CPU[ours]}" \
    -v cn="${CPU[nsd]}" -v ck="${CPU[knot]}" 'BEGIN {
  printf "ours / NSD: %.2fx queries/s, %.2fx less CPU per query\n", q / n, cn / cq
  printf "ours / Knot: %.2fx queries/s, %.2fx less CPU per query\n", q / k, ck / cq
}'
