#!/usr/bin/env bash
# dir backend: incremental send+receive of 1 GiB of changed data
# (1,000 x 1 MiB random files + 10,000 x 1 KiB files) through a pipe between
# two processes, against `tar | zstd -1 | zstd -d | tar -x` of the same data.
# Each side runs RUNS times; page cache dropped before every timed run.
# Prints every run, the medians and the ratio. Needs root (drop_caches).
#
#   bench/send_receive_bench.sh [build-dir]     (RUNS=3 by default)
set -euo pipefail
BUILD="${1:-build}"
HC="$(realpath "$BUILD/src/bin/hc")"
RUNS="${RUNS:-3}"
WORK="$(mktemp -d /var/tmp/hc-sr-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

make_data() {  # dir
  mkdir -p "$1/big" "$1/small"
  for i in $(seq 1 1000); do head -c 1048576 /dev/urandom > "$1/big/f$i"; done
  for i in $(seq 1 10000); do head -c 1024 /dev/urandom > "$1/small/f$i"; done
}

echo "== preparing 1 GiB of data in $WORK"
mkdir -p "$WORK/data"
make_data "$WORK/data"

ours=(); ours_sync=(); peer=(); peer_sync=(); snap=()
for r in $(seq 1 "$RUNS"); do
  for mode in nosync sync; do
    # Two stores, as on two nodes: the receiver has none of the chunks.
    rm -rf "$WORK/a" "$WORK/b"
    extra=""; [ "$mode" = nosync ] && extra="--no-sync"
    A="--root $WORK/a $extra"; B="--root $WORK/b $extra"
    $HC volume $A create src >/dev/null
    $HC volume $A snapshot src base >/dev/null
    $HC volume $A send src base | $HC volume $B receive dst >/dev/null
    cp -a "$WORK/data/." "$WORK/a/volumes/src/live/"
    t0=$(now); $HC volume $A snapshot src changed >/dev/null; t1=$(now)
    [ "$mode" = sync ] && snap+=("$(echo "$t1 - $t0" | bc)")
    drop
    t0=$(now)
    $HC volume $A send src changed --from base | $HC volume $B receive dst >/dev/null
    t1=$(now)
    el=$(echo "$t1 - $t0" | bc)
    if [ "$mode" = nosync ]; then ours+=("$el"); else ours_sync+=("$el"); fi
    cmp -s "$WORK/data/big/f500" "$WORK/b/volumes/dst/live/big/f500" || { echo "MISMATCH"; exit 1; }
    echo "run $r ours ($mode): ${el}s"
  done
  rm -rf "$WORK/peer"; mkdir -p "$WORK/peer"
  drop
  t0=$(now)
  tar -C "$WORK/data" -cf - . | zstd -1 -q -T1 | zstd -d -q | tar -C "$WORK/peer" -xf -
  t1=$(now)
  el=$(echo "$t1 - $t0" | bc); peer+=("$el")
  echo "run $r tar|zstd -1|zstd -d|tar: ${el}s"
  rm -rf "$WORK/peer"; mkdir -p "$WORK/peer"
  drop
  t0=$(now)
  tar -C "$WORK/data" -cf - . | zstd -1 -q -T1 | zstd -d -q | tar -C "$WORK/peer" -xf -
  sync -f "$WORK/peer"
  t1=$(now)
  el=$(echo "$t1 - $t0" | bc); peer_sync+=("$el")
  echo "run $r tar|zstd -1|zstd -d|tar; sync: ${el}s"
done
o=$(printf '%s\n' "${ours[@]}" | median)
os=$(printf '%s\n' "${ours_sync[@]}" | median)
p=$(printf '%s\n' "${peer[@]}" | median)
s=$(printf '%s\n' "${snap[@]}" | median)
ps=$(printf '%s\n' "${peer_sync[@]}" | median)
echo
echo "dir incremental send|receive of 1 GiB changed data (median of $RUNS):"
echo "  ours, no sync      : ${o}s  ($(echo "1024 / $o" | bc) MiB/s)"
echo "  ours, durable sync : ${os}s  ($(echo "1024 / $os" | bc) MiB/s)"
echo "  tar|zstd -1|tar    : ${p}s  ($(echo "1024 / $p" | bc) MiB/s)"
echo "  same, then sync    : ${ps}s  ($(echo "1024 / $ps" | bc) MiB/s)"
echo "  speed ratio ours/peer: $(echo "scale=2; $p / $o" | bc)x without sync, $(echo "scale=2; $ps / $os" | bc)x both durable"
echo "  (durable ours writes 2 GiB: the chunk store and the live copy; tar writes 1 GiB)"
echo "  (snapshot that chunked the 1 GiB, durable, not part of the send: ${s}s)"
