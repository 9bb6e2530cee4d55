#!/usr/bin/env bash
# zfs backend: our send|receive (checksummed envelope around zfs send/recv,
# verified record by record) against plain `zfs send | zfs recv` on the same
# zfs-fuse pool: 1 GiB full (1,000 x 1 MiB random + 10,000 x 1 KiB) and an
# incremental of 100 changed MiB. Target: overhead <= 10 %.
# Needs root and /dev/fuse; starts (and stops) its own zfs-fuse if none runs.
#
#   bench/zfs_send_receive_bench.sh [build-dir]      (RUNS=3 by default)
set -euo pipefail
BUILD="${1:-build}"
HC="$(realpath "$BUILD/src/bin/hc")"
RUNS="${RUNS:-3}"
WORK="$(mktemp -d /var/tmp/hc-zfs-bench.XXXXXX)"
POOL="hcbench$$"
ZPID=""
cleanup() {
  zpool destroy -f "$POOL" 2>/dev/null || true
  if [ -n "$ZPID" ]; then kill "$ZPID" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$ZPID" 2>/dev/null || break; sleep 0.1; done; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# zfs-fuse reports "dataset is busy" for a moment after an unmount.
destroy_retry() { for _ in $(seq 50); do "$@" 2>/dev/null && return 0; sleep 0.2; done; "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

if ! pgrep -x zfs-fuse >/dev/null; then
  zfs-fuse --no-kstat-mount --pidfile "$WORK/zfs.pid"
  for _ in $(seq 50); do [ -s "$WORK/zfs.pid" ] && break; sleep 0.1; done
  ZPID="$(cat "$WORK/zfs.pid")"
fi
truncate -s 6G "$WORK/pool.img"
zpool create -o cachefile=none -m "$WORK/mnt" "$POOL" "$WORK/pool.img"
zfs create "$POOL/hc"
zfs create "$POOL/plain"
Z="--backend zfs --dataset $POOL/hc"

echo "== writing 1 GiB into a volume"
$HC volume $Z create src >/dev/null
LIVE="$(zfs get -H -o value mountpoint "$POOL/hc/src")"
mkdir -p "$LIVE/big" "$LIVE/small"
for i in $(seq 1 1000); do head -c 1048576 /dev/urandom > "$LIVE/big/f$i"; done
for i in $(seq 1 10000); do head -c 1024 /dev/urandom > "$LIVE/small/f$i"; done
$HC volume $Z snapshot src s1 >/dev/null
for i in $(seq 1 100); do head -c 1048576 /dev/urandom > "$LIVE/big/f$i"; done
$HC volume $Z snapshot src s2 >/dev/null

ours=(); plain=(); ours_i=(); plain_i=()
for r in $(seq 1 "$RUNS"); do
  t0=$(now); zfs send "$POOL/hc/src@s1" | zfs receive "$POOL/plain/dst$r"; t1=$(now)
  plain+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); zfs send -i s1 "$POOL/hc/src@s2" | zfs receive "$POOL/plain/dst$r"; t1=$(now)
  plain_i+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); $HC volume $Z send src s1 | $HC volume $Z receive "dst$r" >/dev/null; t1=$(now)
  ours+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); $HC volume $Z send src s2 --from s1 | $HC volume $Z receive "dst$r" >/dev/null; t1=$(now)
  ours_i+=("$(echo "$t1 - $t0" | bc)")
  echo "run $r: full plain ${plain[-1]}s ours ${ours[-1]}s; incremental plain ${plain_i[-1]}s ours ${ours_i[-1]}s"
  destroy_retry zfs destroy -r "$POOL/plain/dst$r"
  destroy_retry $HC volume $Z destroy "dst$r" --yes >/dev/null
done
p=$(printf '%s\n' "${plain[@]}" | median); o=$(printf '%s\n' "${ours[@]}" | median)
pi=$(printf '%s\n' "${plain_i[@]}" | median); oi=$(printf '%s\n' "${ours_i[@]}" | median)
echo
echo "zfs-fuse send|receive, same pool (median of $RUNS):"
echo "  full 1 GiB     : plain zfs ${p}s, ours ${o}s, overhead $(echo "scale=1; ($o - $p) * 100 / $p" | bc) %"
echo "  incr 100 MiB   : plain zfs ${pi}s, ours ${oi}s, overhead $(echo "scale=1; ($oi - $pi) * 100 / $pi" | bc) %"
