# shellcheck shell=bash
# HTTP peers for the proxy benchmarks, configured fairly (see
# ../shared/BENCHMARKING.md): one worker/thread each, access logs off,
# keep-alive to the backend, keepalive_requests 100000. Source this file, then:
#
#   pid=$(proxy_backend_start WORKDIR ADDR PORT)    # nginx: any URI -> a static 100-byte file
#   pid=$(proxy_nginx_start   WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT)
#   pid=$(proxy_haproxy_start WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT)
#   pid=$(proxy_ours_start    WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT BINARY)
#   [PROXY_SERVER_PID=$pid] proxy_wrk URL SECONDS CONNECTIONS [keepalive|close]
#     -> rps=<req/s> p50_ms=<ms> p99_ms=<ms> errors=<n> [cpu_us_per_req=<us>]
#   proxy_rss_kib PID                                # RSS of PID and its descendants
#   proxy_stop PID
#
# Listen only on loopback 127.0.0.90-99 (the DNS bench uses .80-.89). Every
# file (config, logs, pid file, temp dirs, the static file) is under WORKDIR.
# The server runs in the foreground as a child (nginx: master + 1 worker;
# HAProxy: one process, one thread) with its log in WORKDIR/<name>.log; the
# start functions return non-zero (and print the log to stderr) if it does not
# answer GET / with 200 within 15 s, or if something already listens there.
# CPU pinning (BENCHMARKING.md: server under test and backend on CPU 0, the
# load generator on CPU 1): PROXY_SERVER_CPUS (default 0, the proxies),
# PROXY_BACKEND_CPUS (default 0) and PROXY_WRK_CPUS (default 1); "" = no pinning.
# Servers get an fd limit of up to 65536 (PROXY_NOFILE; else the hard limit),
# so that 10,000 idle client connections fit; HAProxy's maxconn and nginx's
# worker_connections are 1,000 below it (capped at 30,000).

_proxy_taskset() {  # CPUS -> prefix command words
  if [ -n "$1" ] && command -v taskset >/dev/null; then echo "taskset -c $1"; fi
}

_proxy_alive() {  # PID: running and not a zombie
  [ -r "/proc/$1/stat" ] || return 1
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

_proxy_answers() {  # ADDR PORT: GET / returns 200
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$1:$2/" 2>/dev/null) || return 1
  [ "$code" = 200 ]
}

_proxy_listening() {  # ADDR PORT: something accepts TCP connections there
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

_proxy_check_addr() {  # ADDR PORT
  case $1 in
    127.0.0.9[0-9]) ;;
    *) echo "proxy_peers: $1 is not in 127.0.0.90-99" >&2; return 1 ;;
  esac
  if _proxy_listening "$1" "$2"; then
    echo "proxy_peers: something already listens at $1:$2" >&2; return 1
  fi
}

_proxy_nofile() {  # -> the fd limit a server can get (call it in \$(...): it raises the limit)
  local want=${PROXY_NOFILE:-65536} hard
  ulimit -n "$want" 2>/dev/null || {
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] || [ "$hard" -gt "$want" ] && hard=$want
    ulimit -n "$hard" 2>/dev/null
  }
  ulimit -n
}

_proxy_wait_ready() {  # NAME PID LOG ADDR PORT
  local deadline=$((SECONDS + 15))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! _proxy_alive "$2"; then
      echo "proxy_peers: $1 exited during start-up; log $3:" >&2; cat "$3" >&2
      return 1
    fi
    if _proxy_answers "$4" "$5"; then return 0; fi
    sleep 0.1
  done
  echo "proxy_peers: $1 does not answer GET / with 200 at $4:$5 after 15 s; log $3:" >&2
  cat "$3" >&2
  proxy_stop "$2" >/dev/null
  return 1
}

_proxy_nginx_common() {  # WORK NOFILE: the part of nginx.conf shared by backend and proxy
  local work=$1 nofile=$2 conns
  conns=$(( nofile - 1000 )); [ "$conns" -gt 30000 ] && conns=30000
  # As root the worker would switch to "nobody" and could not read WORKDIR.
  [ "$(id -u)" -eq 0 ] && echo "user root root;"
  cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events {
    worker_connections $conns;
}
EOF
}

_proxy_nginx_http_common() {  # WORK
  cat <<EOF
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 600s;
    client_body_temp_path $1/tmp/client_body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    server_tokens off;
EOF
}

_proxy_nginx_run() {  # NAME WORK CPUS ADDR PORT NOFILE -> pid (conf is WORK/nginx.conf)
  local name=$1 work=$2 cpus=$3 addr=$4 port=$5 nofile=$6 pid
  if ! nginx -t -q -p "$work" -e "$work/nginx.log" -c "$work/nginx.conf" >&2 2>"$work/check.log"; then
    echo "proxy_peers: $name: nginx -t failed:" >&2; cat "$work/check.log" >&2; return 1
  fi
  # nginx appends its error log and its stderr to the same file.
  # shellcheck disable=SC2046,SC2094
  (ulimit -n "$nofile"
   exec $(_proxy_taskset "$cpus") nginx -p "$work" -e "$work/nginx.log" -c "$work/nginx.conf") \
    </dev/null >>"$work/nginx.log" 2>&1 &
  pid=$!
  _proxy_wait_ready "$name" "$pid" "$work/nginx.log" "$addr" "$port" || return 1
  echo "$pid"
}

proxy_backend_start() {  # WORKDIR ADDR PORT
  if [ $# -ne 3 ]; then echo "usage: proxy_backend_start WORKDIR ADDR PORT" >&2; return 1; fi
  local work addr=$2 port=$3 nofile
  _proxy_check_addr "$addr" "$port" || return 1
  work=$(mkdir -p "$1/www" "$1/tmp" && cd "$1" && pwd) || return 1
  nofile=$(_proxy_nofile)
  # 100 bytes: 99 characters and a newline.
  printf '%099d\n' 0 | tr 0 x > "$work/www/100b.txt"
  {
    _proxy_nginx_common "$work" "$nofile"
    echo "http {"
    _proxy_nginx_http_common "$work"
    cat <<EOF
    # The backend shares CPU 0 with the proxy under test, so it is made cheap:
    # open_file_cache saves an open/fstat/close per request (system calls
    # are expensive on this VM: about +40 % req/s for the backend direct).
    sendfile on;
    open_file_cache max=16;
    default_type text/plain;
    server {
        listen $addr:$port backlog=4096;
        root $work/www;
        location / { try_files /100b.txt =404; }
    }
}
EOF
  } > "$work/nginx.conf"
  _proxy_nginx_run backend "$work" "${PROXY_BACKEND_CPUS-0}" "$addr" "$port" "$nofile"
}

proxy_nginx_start() {  # WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT
  if [ $# -ne 5 ]; then
    echo "usage: proxy_nginx_start WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT" >&2; return 1
  fi
  local work addr=$2 port=$3 baddr=$4 bport=$5 nofile
  _proxy_check_addr "$addr" "$port" || return 1
  work=$(mkdir -p "$1/tmp" && cd "$1" && pwd) || return 1
  nofile=$(_proxy_nofile)
  {
    _proxy_nginx_common "$work" "$nofile"
    echo "http {"
    _proxy_nginx_http_common "$work"
    # keepalive 64 >= the benchmark's client connections (with fewer idle
    # slots than clients nginx keeps reopening backend connections).
    cat <<EOF
    upstream backend {
        server $baddr:$bport;
        keepalive 64;
        keepalive_requests 100000;
        keepalive_timeout 600s;
    }
    server {
        listen $addr:$port backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  } > "$work/nginx.conf"
  _proxy_nginx_run nginx "$work" "${PROXY_SERVER_CPUS-0}" "$addr" "$port" "$nofile"
}

proxy_haproxy_start() {  # WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT
  if [ $# -ne 5 ]; then
    echo "usage: proxy_haproxy_start WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT" >&2; return 1
  fi
  local work addr=$2 port=$3 baddr=$4 bport=$5 nofile maxconn pid
  _proxy_check_addr "$addr" "$port" || return 1
  work=$(mkdir -p "$1" && cd "$1" && pwd) || return 1
  nofile=$(_proxy_nofile)
  # Below the fd limit (BENCHMARKING.md). Not half of it: with http-reuse an
  # idle client connection holds no server connection, and the idle test needs
  # 10,000 clients where the fd limit may not be raisable above 20,000.
  # HAProxy wants maxconn x 2 sockets and by default (strict-limits) refuses to
  # start if it cannot raise the fd limit that far: "no strict-limits" makes
  # that a warning in its log.
  maxconn=$(( nofile - 1000 )); [ "$maxconn" -gt 30000 ] && maxconn=30000
  cat > "$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn
    no strict-limits
    pidfile $work/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 600s
    timeout server 60s
    timeout http-keep-alive 600s
    timeout http-request 60s

frontend fe
    bind $addr:$port
    default_backend be

backend be
    server backend $baddr:$bport
EOF
  if ! haproxy -c -q -f "$work/haproxy.cfg" >"$work/check.log" 2>&1; then
    echo "proxy_peers: haproxy -c failed:" >&2; cat "$work/check.log" >&2; return 1
  fi
  # -db: stay in the foreground, one process (no master-worker).
  # shellcheck disable=SC2046
  (ulimit -n "$nofile"
   exec $(_proxy_taskset "${PROXY_SERVER_CPUS-0}") haproxy -db -f "$work/haproxy.cfg") \
    </dev/null >>"$work/haproxy.log" 2>&1 &
  pid=$!
  _proxy_wait_ready haproxy "$pid" "$work/haproxy.log" "$addr" "$port" || return 1
  echo "$pid"
}

proxy_ours_start() {  # WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT BINARY
  if [ $# -ne 6 ]; then
    echo "usage: proxy_ours_start WORKDIR ADDR PORT BACKEND_ADDR BACKEND_PORT BINARY" >&2; return 1
  fi
  local work addr=$2 port=$3 baddr=$4 bport=$5 bin=$6 nofile pid
  _proxy_check_addr "$addr" "$port" || return 1
  work=$(mkdir -p "$1" && cd "$1" && pwd) || return 1
  bin=$(realpath "$bin") || return 1
  nofile=$(_proxy_nofile)
  # shellcheck disable=SC2046
  (ulimit -n "$nofile"; cd "$work" &&
   exec $(_proxy_taskset "${PROXY_SERVER_CPUS-0}") "$bin" --listen "$addr:$port" \
     --backend "$baddr:$bport" --host '*' --workers 1) \
    </dev/null >>"$work/ours.log" 2>&1 &
  pid=$!
  _proxy_wait_ready ours "$pid" "$work/ours.log" "$addr" "$port" || return 1
  echo "$pid"
}

proxy_stop() {  # PID: TERM, wait up to 5 s (nginx: until its workers are gone too), then KILL
  local pid=$1 kids
  [ -n "$pid" ] || return 0
  _proxy_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    _proxy_alive "$pid" || { wait "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  if _proxy_alive "$pid"; then
    echo "proxy_peers: $pid still running after 5 s, killing" >&2
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
  fi
  for k in $kids; do
    for _ in $(seq 1 20); do _proxy_alive "$k" || break; sleep 0.1; done
    _proxy_alive "$k" && kill -KILL "$k" 2>/dev/null
  done
  return 0
}

proxy_rss_kib() {  # PID -> VmRSS in KiB of PID plus all its descendants
  local pid=$1 sum=0 kids k r
  [ -r "/proc/$pid/status" ] || { echo 0; return; }
  sum=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  sum=${sum:-0}
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null)
  for k in $kids; do
    r=$(proxy_rss_kib "$k"); sum=$((sum + r))
  done
  echo "$sum"
}

_proxy_ms() {  # wrk duration (612.00us, 1.23ms, 2.00s, 1.00m) -> milliseconds
  awk -v d="$1" 'BEGIN {
    v = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000
    printf "%.3f", v }'
}

_proxy_tree_ticks() {  # PID -> utime+stime (clock ticks) of PID and its descendants
  local pid=$1 sum=0 kids k t
  [ -r "/proc/$pid/stat" ] || { echo 0; return; }
  sum=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null)
  for k in $kids; do
    t=$(_proxy_tree_ticks "$k"); sum=$((sum + t))
  done
  echo "$sum"
}

# With PROXY_SERVER_PID set, also the CPU time of that server (process tree)
# per completed request: unlike req/s it does not drop when other processes
# compete for the CPUs (the machine is shared), and wrk is not in it.
proxy_wrk() {  # URL SECONDS CONNECTIONS [keepalive|close]
  if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: proxy_wrk URL SECONDS CONNECTIONS [keepalive|close]" >&2; return 1
  fi
  local url=$1 secs=$2 conns=$3 mode=${4:-keepalive} out rc hdr=() p50 p99 t0="" t1="" hz
  hz=$(getconf CLK_TCK)
  case $mode in
    keepalive) ;;
    close) hdr=(-H 'Connection: close') ;;
    *) echo "proxy_wrk: mode is keepalive or close, not $mode" >&2; return 1 ;;
  esac
  [ -n "${PROXY_SERVER_PID:-}" ] && t0=$(_proxy_tree_ticks "$PROXY_SERVER_PID")
  # shellcheck disable=SC2046
  out=$( (ulimit -n "$(_proxy_nofile)"
          exec $(_proxy_taskset "${PROXY_WRK_CPUS-1}") wrk -t1 -c"$conns" -d"${secs}s" \
            --latency "${hdr[@]}" "$url") 2>&1)
  rc=$?
  [ -n "${PROXY_SERVER_PID:-}" ] && t1=$(_proxy_tree_ticks "$PROXY_SERVER_PID")
  if [ $rc -ne 0 ] || ! grep -q 'Requests/sec:' <<<"$out"; then
    echo "proxy_wrk: wrk failed (status $rc):" >&2; echo "$out" >&2; return 1
  fi
  p50=$(_proxy_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(_proxy_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  awk -v p50="$p50" -v p99="$p99" -v t0="$t0" -v t1="$t1" -v hz="$hz" '
    / requests in / { done = $1 }
    /Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END {
      printf "rps=%.0f p50_ms=%s p99_ms=%s errors=%d", rps, p50, p99, err
      if (t0 != "" && t1 != "" && done > 0) printf " cpu_us_per_req=%.2f", (t1 - t0) / hz * 1e6 / done
      printf "\n" }' <<<"$out"
}
