#!/usr/bin/env bash
# End-to-end test of `hc local` as a user runs it: the real
# binary, real containers (or processes), curl as the client.
# Usage: hc_local_test.sh path/to/hc
set -uo pipefail
HC="$1"
DIR="$(mktemp -d /tmp/hc-local-test.XXXXXX)"
chmod 755 "$DIR"
export HC_STORE_ROOT="$DIR/store" HC_RUNTIME_DIR="$DIR/runtime"
cleanup() {
  "$HC" local stop web >/dev/null 2>&1
  "$HC" local stop job >/dev/null 2>&1
  rm -rf "$DIR"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

check "help" 0 "$HC" local --help
contains "help lists run" "$DIR/out" "run"
check "unknown template" 2 "$HC" local run web --template nope
contains "unknown template names the choices" "$DIR/err" "static, command, postgres, mariadb"
[ ! -e "$HC_STORE_ROOT/volumes/web" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: a bad template created a volume"; }

check "run static" 0 "$HC" local run web --template static --memory 64M
contains "run prints the address" "$DIR/out" "http://127.0.0.1:"
PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$DIR/out" | head -1)
check "curl the site" 0 curl -sf "http://127.0.0.1:$PORT/"
contains "welcome page names the app" "$DIR/out" "web"
check "run twice" 4 "$HC" local run web --template static
check "status" 0 "$HC" local status
contains "status shows running" "$DIR/out" "running"
check "status json" 0 "$HC" local status --json
contains "json has the port" "$DIR/out" "\"port\": $PORT"
check "logs" 0 "$HC" local logs web -n 5
contains "log has httpd's request lines" "$DIR/out" "response:200"
check "freeze" 0 "$HC" local freeze web
check "thaw" 0 "$HC" local thaw web
check "restart" 0 "$HC" local restart web
check "stop" 0 "$HC" local stop web
check "curl after stop fails" 7 curl -s "http://127.0.0.1:$PORT/"
check "start again" 0 "$HC" local start web
check "stop again" 0 "$HC" local stop web
check "rm" 0 "$HC" local rm web
contains "rm says the volume is kept" "$DIR/out" "volume is kept"
check "stop unknown" 3 "$HC" local stop web

check "command app with the process runtime" 0 "$HC" local --runtime process run job \
  --template command --command 'exec busybox httpd -f -p 127.0.0.1:$PORT -h .'
check "stop command app" 0 "$HC" local stop job

echo "hc local: $pass passed, $fail failed"
[ "$fail" = 0 ]
