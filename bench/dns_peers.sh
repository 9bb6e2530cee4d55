# shellcheck shell=bash
# Peer DNS servers (NSD, Knot) for benchmarks, configured fairly (see
# ../shared/BENCHMARKING.md): one serving process/worker, no response rate
# limiting, no journal / zone-file sync. Source this file, then:
#
#   pid=$(dns_peer_start_nsd  WORKDIR ADDR PORT ZONE ZONEFILE [ZONE ZONEFILE ...])
#   pid=$(dns_peer_start_knot WORKDIR ADDR PORT ZONE ZONEFILE [ZONE ZONEFILE ...])
#   DNS_SERVER_PID=$pid dns_perf ADDR PORT QUERYFILE SECONDS [CLIENTS]
#     -> qps=<q/s> lost=<n> avg_ms=<ms> completed=<n> [cpu_s=<s> cpu_us_per_query=<us>]
#   dns_peer_stop $pid
#
# The server runs in the foreground as a child with its log in WORKDIR/<name>.log;
# the start functions return non-zero (and print the log to stderr) if it does not
# answer the SOA of the first zone within 15 s.
# CPU pinning (BENCHMARKING.md: server on CPU 0, load generator on CPU 1):
#   DNS_SERVER_CPUS (default 0) and DNS_PERF_CPUS (default 1); set to "" to not pin.
# cpu_us_per_query = CPU time of the server process and all its descendants (NSD
# serves from a forked child) over the run / queries completed.

_dns_taskset() {  # CPUS -> prefix command words
  if [ -n "$1" ] && command -v taskset >/dev/null; then echo "taskset -c $1"; fi
}

_dns_alive() {  # PID: running and not a zombie
  [ -r "/proc/$1/stat" ] || return 1
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

_dns_answers() {  # ADDR PORT ZONE
  local out
  out=$(dig +norec +time=1 +tries=1 +short -p "$2" "@$1" "$3" SOA 2>/dev/null) || return 1
  [ -n "$out" ] && [[ "$out" != ";;"* ]]
}

_dns_wait_ready() {  # NAME PID LOG ADDR PORT ZONE
  local deadline=$((SECONDS + 15))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! _dns_alive "$2"; then
      echo "dns_peers: $1 exited during start-up; log $3:" >&2; cat "$3" >&2
      return 1
    fi
    if _dns_answers "$4" "$5" "$6"; then return 0; fi
    sleep 0.1
  done
  echo "dns_peers: $1 does not answer SOA $6 at $4#$5 after 15 s; log $3:" >&2
  cat "$3" >&2
  dns_peer_stop "$2" >/dev/null
  return 1
}

_dns_check_args() {  # FUNC NARGS
  if [ "$2" -lt 5 ] || [ $(( ($2 - 3) % 2 )) -ne 0 ]; then
    echo "usage: $1 WORKDIR ADDR PORT ZONE ZONEFILE [ZONE ZONEFILE ...]" >&2
    return 1
  fi
}

dns_peer_start_nsd() {
  _dns_check_args dns_peer_start_nsd $# || return 1
  local work addr port first conf log pid zone file
  work=$(mkdir -p "$1" && cd "$1" && pwd) || return 1
  addr=$2; port=$3; shift 3; first=$1
  if _dns_answers "$addr" "$port" "$first"; then
    echo "dns_peers: something already answers at $addr#$port" >&2; return 1
  fi
  conf="$work/nsd.conf"; log="$work/nsd.log"
  cat > "$conf" <<EOF
server:
    ip-address: $addr@$port
    port: $port
    username: ""
    chroot: ""
    zonesdir: "$work"
    database: ""
    pidfile: "$work/nsd.pid"
    xfrdfile: "$work/xfrd.state"
    xfrdir: "$work"
    zonelistfile: "$work/zone.list"
    logfile: "$log"
    server-count: 1
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    hide-version: yes
    hide-identity: yes
    minimal-responses: yes
    refuse-any: no
remote-control:
    control-enable: no
EOF
  while [ $# -ge 2 ]; do
    zone=$1; file=$(realpath "$2") || return 1; shift 2
    printf 'zone:\n    name: %s\n    zonefile: "%s"\n' "$zone" "$file" >> "$conf"
  done
  nsd-checkconf "$conf" >&2 || return 1
  # shellcheck disable=SC2046
  $(_dns_taskset "${DNS_SERVER_CPUS-0}") nsd -d -c "$conf" </dev/null >>"$log" 2>&1 &
  pid=$!
  _dns_wait_ready nsd "$pid" "$log" "$addr" "$port" "$first" || return 1
  echo "$pid"
}

dns_peer_start_knot() {
  _dns_check_args dns_peer_start_knot $# || return 1
  local work addr port first conf log pid zone file
  work=$(mkdir -p "$1" && cd "$1" && pwd) || return 1
  addr=$2; port=$3; shift 3; first=$1
  if _dns_answers "$addr" "$port" "$first"; then
    echo "dns_peers: something already answers at $addr#$port" >&2; return 1
  fi
  conf="$work/knot.conf"; log="$work/knot.log"
  mkdir -p "$work/db" "$work/run"
  # No `user:` (stays the invoking user); rate limiting in Knot is the mod-rrl
  # module, which is not loaded. Zone files are read once, never written back.
  cat > "$conf" <<EOF
server:
    listen: $addr@$port
    rundir: "$work/run"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$work/db"
template:
  - id: default
    storage: "$work"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
EOF
  while [ $# -ge 2 ]; do
    zone=$1; file=$(realpath "$2") || return 1; shift 2
    printf '  - domain: %s\n    file: "%s"\n' "$zone" "$file" >> "$conf"
  done
  knotc -c "$conf" conf-check >&2 || return 1
  # shellcheck disable=SC2046
  $(_dns_taskset "${DNS_SERVER_CPUS-0}") knotd -c "$conf" </dev/null >>"$log" 2>&1 &
  pid=$!
  _dns_wait_ready knot "$pid" "$log" "$addr" "$port" "$first" || return 1
  echo "$pid"
}

dns_peer_stop() {  # PID: TERM, wait up to 5 s, then KILL
  local pid=$1
  [ -n "$pid" ] || return 0
  _dns_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    _dns_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "dns_peers: $pid still running after 5 s, killing" >&2
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
  return 0
}

_dns_tree_ticks() {  # PID -> utime+stime (clock ticks) of PID and its descendants
  local pid=$1 sum=0 kids k t
  [ -r "/proc/$pid/stat" ] || { echo 0; return; }
  # fields after "(comm)": state=1 ... utime=12 stime=13
  sum=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null)
  for k in $kids; do
    t=$(_dns_tree_ticks "$k"); sum=$((sum + t))
  done
  echo "$sum"
}

dns_perf() {  # ADDR PORT QUERYFILE SECONDS [CLIENTS]
  if [ $# -lt 4 ]; then
    echo "usage: dns_perf ADDR PORT QUERYFILE SECONDS [CLIENTS]" >&2; return 1
  fi
  local addr=$1 port=$2 qfile=$3 secs=$4 clients=${5:-10} out t0 t1 hz rc
  hz=$(getconf CLK_TCK)
  [ -n "${DNS_SERVER_PID:-}" ] && t0=$(_dns_tree_ticks "$DNS_SERVER_PID")
  # shellcheck disable=SC2046
  out=$($(_dns_taskset "${DNS_PERF_CPUS-1}") dnsperf -s "$addr" -p "$port" -d "$qfile" \
        -l "$secs" -c "$clients" -q 1000 -t 2 2>&1)
  rc=$?
  [ -n "${DNS_SERVER_PID:-}" ] && t1=$(_dns_tree_ticks "$DNS_SERVER_PID")
  if [ $rc -ne 0 ] || ! grep -q 'Queries per second' <<<"$out"; then
    echo "dns_perf: dnsperf failed (status $rc):" >&2; echo "$out" >&2; return 1
  fi
  awk -v t0="${t0:-}" -v t1="${t1:-}" -v hz="$hz" '
    /Queries completed:/ { done = $3 }
    /Queries lost:/      { lost = $3 }
    /Queries per second:/ { qps = $4 }
    /Average Latency \(s\):/ { avg = $4 * 1000 }
    END {
      printf "qps=%s lost=%s avg_ms=%.3f completed=%s", qps, lost, avg, done
      if (t0 != "" && t1 != "" && done > 0) {
        cpu = (t1 - t0) / hz
        printf " cpu_s=%.2f cpu_us_per_query=%.2f", cpu, cpu * 1e6 / done
      }
      printf "\n"
    }' <<<"$out"
}
