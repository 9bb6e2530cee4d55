#!/usr/bin/env bash
# End-to-end test of `hc demo` and the cluster commands as a user runs them:
# the real hc, a real etcd and three real hcd processes on loopback, curl as
# the client. Needs etcd (Debian etcd-server).
# Usage: hc_demo_test.sh path/to/hc
set -uo pipefail
HC="$1"
if ! command -v etcd >/dev/null; then echo "skipped: etcd not installed (apt-get install etcd-server)"; exit 0; fi
DIR="$(mktemp -d /tmp/hc-demo-test.XXXXXX)"
chmod 755 "$DIR"
# Our own client config, so the user's is never touched.
export HC_CLIENT_CONFIG="$DIR/client.json"
unset HC_API HC_TOKEN
cleanup() {
  "$HC" demo --dir "$DIR/demo" stop >/dev/null 2>&1
  rm -rf "$DIR"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"

check "demo help" 0 "$HC" demo --help
contains "demo help says stop" "$DIR/out" "stop"

check "demo" 0 "$HC" demo --dir "$DIR/demo"
cp "$DIR/out" "$DIR/demo.out"
contains "demo starts etcd" "$DIR/demo.out" "etcd is up at http://127.0.0.10:2379"
contains "demo forms a 3-node cluster" "$DIR/demo.out" "3 node(s), leader: node"
contains "demo's site runs" "$DIR/demo.out" "app 'hello' is running on node"
contains "demo shows the edited page" "$DIR/demo.out" "| <h1>Hello from HybridCluster</h1>"
contains "demo shows the diff" "$DIR/demo.out" "M public/index.html"
contains "demo tells how to stop" "$DIR/demo.out" "hc demo stop"
contains "demo asks the cluster DNS" "$DIR/demo.out" "hello.demo.test.	10	IN	A	127.0.0.11"
contains "demo shows the zone" "$DIR/demo.out" "demo.test. 10 IN NS ns1.demo.test."
# The site by its domain through a node that does not run it (the proxy forwards).
RESOLVE=$(sed -n 's|^  curl --resolve \([^ ]*\) \(http://[^ ]*\)$|\1|p' "$DIR/demo.out" | head -1)
URL=$(sed -n 's|^  curl --resolve \([^ ]*\) \(http://[^ ]*\)$|\2|p' "$DIR/demo.out" | head -1)
check "demo site answers through another node's proxy" 0 curl -sf --resolve "$RESOLVE" "$URL"
[ -s "$HC_CLIENT_CONFIG" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: no client config written"; }

# The cluster commands find the demo through the client config.
check "cluster status" 0 "$HC" cluster status
contains "status lists node3" "$DIR/out" "node3"
check "dns show" 0 "$HC" dns show
contains "dns show prints the SOA" "$DIR/out" "demo.test. 10 IN SOA ns1.demo.test. hostmaster.demo.test."
check "dns show of a zone not served" 3 "$HC" dns show --zone example.org
contains "dns show names the zones served" "$DIR/err" "zones: demo.test"
check "cluster status --json" 0 "$HC" cluster status --json
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["nodes"]))' "$DIR/out")" = 3 ] \
  && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: --json does not list 3 nodes"; }
check "app list" 0 "$HC" app list
contains "list shows hello" "$DIR/out" "hello"
check "app show --json" 0 "$HC" app show hello --json
contains "show has the placement" "$DIR/out" '"epoch": 1'
check "app create" 0 "$HC" app create api --template command --command 'exec busybox httpd -f -p 127.0.0.1:$PORT -h .' --memory 64M
contains "create waits until it runs" "$DIR/out" "is running on node"
check "duplicate name" 4 "$HC" app create api --template static
contains "duplicate is explained" "$DIR/err" "already exists"
check "unknown template" 2 "$HC" app create x --template wordpress
check "bad domain" 2 "$HC" app create x --template static --domain 'no_underscores.example.com'
check "bad limits" 2 "$HC" app create x --template static --memory 1M
check "show unknown" 3 "$HC" app show nosuch
check "delete needs --yes off a terminal" 2 "$HC" app delete api </dev/null
check "delete" 0 "$HC" app delete api --yes
check "wrong api" 1 "$HC" app list --api http://127.0.0.1:1
contains "wrong api is explained" "$DIR/err" "is hcd running there?"

check "second demo refused" 4 "$HC" demo --dir "$DIR/demo"
contains "second demo says why" "$DIR/err" "already running"

PIDS=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["etcd_pid"], *d["node_pids"])' "$DIR/demo/cluster.json")
check "demo stop" 0 "$HC" demo --dir "$DIR/demo" stop
for p in $PIDS; do
  # Gone, or a zombie waiting for an init that does not reap (as in some containers).
  state=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
  if [ -n "$state" ] && [ "$state" != Z ]; then
    fail=$((fail + 1)); echo "FAIL: pid $p still runs after demo stop (state $state): $(tr '\0' ' ' < /proc/$p/cmdline)"
  else pass=$((pass + 1)); fi
done
check "demo site gone" 7 curl -s --resolve "$RESOLVE" "$URL"
[ ! -e "$DIR/demo" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: demo stop left $DIR/demo"; }
[ ! -e "$HC_CLIENT_CONFIG" ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: demo stop left the client config"; }

echo "hc demo: $pass passed, $fail failed"
[ "$fail" = 0 ]
