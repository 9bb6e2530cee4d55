#!/usr/bin/env bash
# End-to-end test of `hc volume` as a user runs it: real binary, real pipes,
# exit codes and messages. Usage: hc_volume_test.sh path/to/hc
set -uo pipefail
HC="$1"
DIR="$(mktemp -d /tmp/hc-cli-test.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT
export HC_STORE_ROOT="$DIR/a"
B="--root $DIR/b"
. "$(dirname "$0")/lib.sh"

check "create" 0 "$HC" volume create site
LIVE="$HC_STORE_ROOT/volumes/site/live"
mkdir -p "$LIVE/public" && echo hello > "$LIVE/public/index.html"
check "snapshot" 0 "$HC" volume snapshot site v1
echo changed > "$LIVE/public/index.html"; echo new > "$LIVE/public/new.html"
check "snapshot 2" 0 "$HC" volume snapshot site v2
check "diff" 0 "$HC" volume diff site v1 v2
contains "diff lists added file" "$DIR/out" "+ public/new.html"
contains "diff lists modified file" "$DIR/out" "M public/index.html"
check "snapshots --json after the subcommand" 0 "$HC" volume snapshots site --json
contains "json has names" "$DIR/out" '"name": "v2"'

check "full send | receive into another store" 0 bash -c "'$HC' volume send site v1 | '$HC' volume $B receive replica"
check "incremental send | receive" 0 bash -c "'$HC' volume send site v2 --from v1 | '$HC' volume $B receive replica"
check "replica content" 0 "$HC" volume $B cat replica v2 public/index.html
contains "replica has v2 data" "$DIR/out" "changed"
cmp -s "$LIVE/public/new.html" "$DIR/b/volumes/replica/live/public/new.html" && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: live replica differs"; }
check "same stream again is a no-op" 0 bash -c "'$HC' volume send site v2 --from v1 | '$HC' volume $B receive replica"
contains "no-op is reported" "$DIR/out" "nothing to do"

"$HC" volume send site v2 --from v1 -o "$DIR/stream"
head -c 100 "$DIR/stream" > "$DIR/cut"
check "truncated stream is refused" 5 "$HC" volume $B receive replica2 -i "$DIR/cut"
contains "truncation is explained" "$DIR/err" "damaged or incomplete"
check "unknown base is a conflict" 4 "$HC" volume $B receive other -i "$DIR/stream"
check "replica is read-only" 1 "$HC" volume $B snapshot replica x
contains "read-only is explained" "$DIR/err" "read-only replica"

check "missing snapshot" 3 "$HC" volume cat site nope public/index.html
contains "names the newest" "$DIR/err" "newest is 'v2'"
check "path escape" 1 "$HC" volume ls site v1 ../..
contains "escape is explained" "$DIR/err" "cannot leave the snapshot"
check "bad name" 2 "$HC" volume create "Bad Name"
check "destroy needs --yes" 2 "$HC" volume destroy site
check "rollback keeps a branch" 0 "$HC" volume rollback site v1 --branch kept
contains "branch is named" "$DIR/out" "kept in volume 'kept'"
contains "live data rolled back" "$LIVE/public/index.html" "hello"
check "verify" 0 "$HC" volume verify
check "help" 0 "$HC" volume --help
contains "help lists rollback" "$DIR/out" "rollback"
HCD="$(dirname "$HC")/hcd"
check "hcd --help lists the options" 0 "$HCD" --help
contains "help names etcd_endpoints" "$DIR/out" "etcd_endpoints"
check "hcd with a missing config file" 2 "$HCD" --config "$DIR/nope.yaml"
contains "missing config is explained" "$DIR/err" "cannot read config file"
printf 'data_dir: relative/path\n' > "$DIR/bad.yaml"
check "hcd with a bad config" 2 "$HCD" --config "$DIR/bad.yaml" --check-config
contains "bad config is explained" "$DIR/err" "data_dir must be an absolute path"
printf 'colour: red\n' > "$DIR/unknown.yaml"
check "hcd with an unknown option" 2 "$HCD" --config "$DIR/unknown.yaml"
contains "unknown option names the line" "$DIR/err" "unknown.yaml:1: unknown option 'colour'"

echo "hc volume cli: $pass passed, $fail failed"
[ "$fail" = 0 ]
