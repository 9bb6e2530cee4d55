#!/usr/bin/env bash
# HTTP reverse proxy: (a) the backend direct, (b) nginx, (c) HAProxy and (d)
# ours (build/bench/proxy_bench_server, when built) in front of the same
# backend (nginx serving a static 100-byte file), configured as
# ../shared/BENCHMARKING.md says (one worker each; see bench/proxy_peers.sh).
# Servers and backend on CPU 0, wrk (-t1) on CPU 1, loopback 127.0.0.90-93.
#
# 1. wrk with keep-alive and with `Connection: close`, RUNS x SECS each
#    (runs interleaved across the servers, after a 2 s warm-up of each):
#    medians of req/s, p50, p99 and the server's CPU time per request (its
#    own processes: the proxy without the backend; for "direct" the backend),
#    and ours / nginx. CPU per request holds up when other processes share the
#    machine; req/s and latency do not.
# 2. Memory per idle connection: each proxy restarted, warmed up (1 s of wrk),
#    then IDLE (10,000) keep-alive client connections that each made one
#    request are held open (bench/idle_conns.py): RSS of the proxy's process
#    tree after minus before, / IDLE. Target for ours: <= 10 KiB.
#
# The `Connection: close` runs are mostly limited by wrk itself on one core.
#
#   bench/proxy_bench.sh [BUILD_DIR]     env: RUNS=3 SECS=10 CONNS=64 IDLE=10000
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
RUNS=${RUNS:-3} SECS=${SECS:-10} CONNS=${CONNS:-64} IDLE=${IDLE:-10000}
PORT=8080
for p in nginx haproxy wrk curl python3 taskset; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
    { echo "$p is missing: sudo scripts/install.sh --deps" >&2; exit 2; }
done
export PATH="$PATH:/usr/sbin"
# shellcheck source=bench/proxy_peers.sh
source bench/proxy_peers.sh

ours_bin="$build/bench/proxy_bench_server"
work=$(mktemp -d /tmp/hc-proxy-bench-XXXXXX)
backend_pid="" idle_pid=""
declare -A PID=()
cleanup() {
  if [ -n "$idle_pid" ]; then kill -TERM "$idle_pid" 2>/dev/null; wait "$idle_pid" 2>/dev/null; fi
  for s in "${!PID[@]}"; do proxy_stop "${PID[$s]}"; done
  proxy_stop "$backend_pid"
  rm -rf "$work"
}
trap cleanup EXIT

declare -A ADDR=([direct]=127.0.0.90 [nginx]=127.0.0.91 [haproxy]=127.0.0.92 [ours]=127.0.0.93)

start() {  # NAME -> sets PID[NAME]; non-zero if it did not start
  local name=$1 addr=${ADDR[$1]} b=${ADDR[direct]} pid
  case $name in
    nginx) pid=$(proxy_nginx_start "$work/nginx" "$addr" "$PORT" "$b" "$PORT") || return 1 ;;
    haproxy) pid=$(proxy_haproxy_start "$work/haproxy" "$addr" "$PORT" "$b" "$PORT") || return 1 ;;
    ours) pid=$(proxy_ours_start "$work/ours" "$addr" "$PORT" "$b" "$PORT" "$ours_bin") || return 1 ;;
  esac
  PID[$name]=$pid
}

stop() {  # NAME
  proxy_stop "${PID[$1]}"; unset "PID[$1]"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }  # KEY < line -> value

load=$(cut -d' ' -f1 /proc/loadavg)
echo "== $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}'); load average $load"
if awk -v l="$load" 'BEGIN {exit !(l > 0.5)}'; then
  echo "   note: the machine is not idle (load $load): figures will be low and noisy" >&2
fi
backend_pid=$(proxy_backend_start "$work/backend" "${ADDR[direct]}" "$PORT")
targets=(direct nginx haproxy)
start nginx
start haproxy
if [ -x "$ours_bin" ]; then
  if start ours; then targets+=(ours); else echo "ours: did not start (see above); skipped"; fi
else
  echo "ours: not built yet ($ours_bin; cmake --build $build --target proxy_bench_server)"
fi

# 1. Throughput and latency.
declare -A RPS=() P50=() P99=() CPU=() ERR=()
for t in "${targets[@]}"; do proxy_wrk "http://${ADDR[$t]}:$PORT/" 2 "$CONNS" keepalive >/dev/null; done
for r in $(seq 1 "$RUNS"); do
  for t in "${targets[@]}"; do
    for m in keepalive close; do
      if [ "$t" = direct ]; then spid=$backend_pid; else spid=${PID[$t]}; fi
      line=$(PROXY_SERVER_PID=$spid proxy_wrk "http://${ADDR[$t]}:$PORT/" "$SECS" "$CONNS" "$m")
      printf '  run %d %-8s %-9s %s\n' "$r" "$t" "$m" "$line"
      RPS[$t/$m]+="$(field rps <<<"$line") "
      P50[$t/$m]+="$(field p50_ms <<<"$line") "
      P99[$t/$m]+="$(field p99_ms <<<"$line") "
      CPU[$t/$m]+="$(field cpu_us_per_req <<<"$line") "
      ERR[$t/$m]=$(( ${ERR[$t/$m]:-0} + $(field errors <<<"$line") ))
    done
  done
done
declare -A MRPS=() MP99=() MCPU=()
echo
echo "HTTP, GET of a 100-byte static file, wrk -t1 -c$CONNS, median of $RUNS x ${SECS}s ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf '%-9s %-10s %10s %9s %9s %12s %7s\n' server mode "req/s" "p50 ms" "p99 ms" "CPU us/req" errors
for t in "${targets[@]}"; do
  for m in keepalive close; do
    MRPS[$t/$m]=$(tr ' ' '\n' <<<"${RPS[$t/$m]}" | grep . | median)
    MP99[$t/$m]=$(tr ' ' '\n' <<<"${P99[$t/$m]}" | grep . | median)
    MCPU[$t/$m]=$(tr ' ' '\n' <<<"${CPU[$t/$m]}" | grep . | median)
    printf '%-9s %-10s %10s %9s %9s %12s %7s\n' "$t" "$m" "${MRPS[$t/$m]}" \
      "$(tr ' ' '\n' <<<"${P50[$t/$m]}" | grep . | median)" "${MP99[$t/$m]}" "${MCPU[$t/$m]}" "${ERR[$t/$m]}"
  done
done
if [ -n "${PID[ours]:-}" ]; then
  for m in keepalive close; do
    awk -v o="${MRPS[ours/$m]}" -v n="${MRPS[nginx/$m]}" -v op="${MP99[ours/$m]}" -v np="${MP99[nginx/$m]}" \
        -v oc="${MCPU[ours/$m]}" -v nc="${MCPU[nginx/$m]}" -v m="$m" \
      'BEGIN {printf "ours / nginx, %-9s: req/s %.2fx, p99 %.2fx, CPU per request %.2fx%s\n", m, o / n, op / np, oc / nc,
              (m == "keepalive" ? (o >= n && op <= np ? "  (target >= 1.0x, p99 <= nginx: met)" : "  (target >= 1.0x, p99 <= nginx: NOT met)") : "")}'
  done
fi
echo "(Connection: close is mostly limited by wrk on its one core.)"

# 2. Memory per idle keep-alive connection, each proxy freshly started.
proxies=(nginx haproxy)
[ -n "${PID[ours]:-}" ] && proxies+=(ours)
for s in "${proxies[@]}"; do stop "$s"; done
declare -A IB=() IA=() IO=() IS=()
for s in "${proxies[@]}"; do
  echo "== idle connections: $s"
  start "$s" || { echo "$s: did not restart; skipped"; continue; }
  addr=${ADDR[$s]}
  proxy_wrk "http://$addr:$PORT/" 1 "$CONNS" keepalive >/dev/null  # warm-up
  sleep 0.5
  IB[$s]=$(proxy_rss_kib "${PID[$s]}")
  # shellcheck disable=SC2046
  $(_proxy_taskset "${PROXY_WRK_CPUS-1}") python3 bench/idle_conns.py "$addr:$PORT" \
    -n "$IDLE" --host-header app.example.com >"$work/idle-$s.out" 2>"$work/idle-$s.err" &
  idle_pid=$!
  deadline=$((SECONDS + 300))
  until grep -qs '^open=' "$work/idle-$s.out"; do
    if ! _proxy_alive "$idle_pid" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "idle_conns.py failed against $s:" >&2; cat "$work/idle-$s.err" >&2; break
    fi
    sleep 0.2
  done
  sleep 1
  IA[$s]=$(proxy_rss_kib "${PID[$s]}")
  kill -TERM "$idle_pid" 2>/dev/null; wait "$idle_pid" 2>/dev/null || true; idle_pid=""
  sed 's/^/   /' "$work/idle-$s.err"
  IO[$s]=$(field open <<<"$(grep '^open=' "$work/idle-$s.out")")
  IS[$s]=$(field still_open <<<"$(grep '^still_open=' "$work/idle-$s.out")")
  stop "$s"
done
echo
echo "Idle keep-alive client connections ($IDLE, one request each), RSS of the proxy's processes"
printf '%-9s %12s %12s %8s %11s %16s\n' server "RSS before" "RSS after" open "still open" "per connection"
for s in "${proxies[@]}"; do
  [ -n "${IA[$s]:-}" ] || continue
  printf '%-9s %8s KiB %8s KiB %8s %11s %12s KiB\n' "$s" "${IB[$s]}" "${IA[$s]}" "${IO[$s]:--}" "${IS[$s]:--}" \
    "$(awk -v a="${IA[$s]}" -v b="${IB[$s]}" -v n="${IO[$s]:-0}" 'BEGIN {if (n > 0) printf "%.2f", (a - b) / n; else print "-"}')"
done
if [ -n "${IA[ours]:-}" ] && [ "${IO[ours]:-0}" -gt 0 ]; then
  awk -v a="${IA[ours]}" -v b="${IB[ours]}" -v n="${IO[ours]}" \
    'BEGIN {k = (a - b) / n; printf "ours: %.2f KiB per idle connection (target <= 10 KiB: %s)\n", k, k <= 10 ? "met" : "NOT met"}'
fi
echo "(RSS only: kernel socket buffers are not counted, for any of them.)"
