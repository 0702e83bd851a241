#!/usr/bin/env bash
# Where a node's memory goes at a million tasks: one node on loopback, `percyctl bench listing`
# loads TASKS ready tasks into it, the node snapshots them by itself, and this prints its VmRSS
# before the load, right after it, once the snapshot covers it, and each second after that
# (TRACE samples), with /proc/<pid>/smaps_rollup. The recipe for a per-call-site breakdown
# (heaptrack) is in bench-results/NOTES.md, "Memory".
#
#   scripts/memory-breakdown.sh            (release binaries from target/release)
#
# Env: TASKS (1000000)  TRACE (15)  BIN (target/release)  KEEP (1: leave the node running and
#      print its pid and address instead of stopping it)  WRAP (a command to run percyd under,
#      e.g. "heaptrack -o /tmp/percyd")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${BIN:-target/release}")"
TASKS="${TASKS:-1000000}"
TRACE="${TRACE:-15}"
dir="$(mktemp -d /tmp/percy-memory.XXXX)"
# shellcheck disable=SC2086 # WRAP is a command line
${WRAP:-} "$BIN/percyd" --listen 127.0.0.1:0 --address-file "$dir/addr" --data-dir "$dir/data" \
  >"$dir/percyd.log" 2>&1 &
launcher=$!
stop() { [ "${KEEP:-0}" = 1 ] || { kill "$launcher" 2>/dev/null; wait "$launcher" 2>/dev/null; rm -rf "$dir"; }; }
trap stop EXIT
for _ in $(seq 150); do [ -s "$dir/addr" ] && break; sleep 0.2; done
[ -s "$dir/addr" ] || { echo "percyd did not start:"; cat "$dir/percyd.log"; exit 1; }
addr="$(cat "$dir/addr")"
pid="$(pgrep -n -f -- "--address-file $dir/addr")"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
metric() { curl -sf "http://$addr/metrics" | awk -v name="$1" '$1 == name {print $2}'; }
per_task() { echo $(( ($1 - before) * 1024 / TASKS )); }

sleep 2
before="$(rss_kib)"
"$BIN/percyctl" --endpoints "$addr" bench listing --tasks "$TASKS" -d 1s -c 1 >"$dir/bench.out" 2>&1 \
  || { echo "the load failed:"; tail "$dir/bench.out"; exit 1; }
loaded="$(rss_kib)"
for _ in $(seq 600); do
  applied="$(metric percy_raft_applied_index)"
  snapshot="$(metric percy_raft_snapshot_index)"
  [ -n "$applied" ] && [ -n "$snapshot" ] && awk "BEGIN {exit !($snapshot >= $applied)}" && break
  sleep 0.5
done
snapshotted="$(rss_kib)"
echo "VmRSS before the load: ${before} KiB"
echo "right after the load:  ${loaded} KiB ($(per_task "$loaded") B/task)"
echo "at the snapshot:       ${snapshotted} KiB ($(per_task "$snapshotted") B/task)"
echo -n "each second after:    "
for _ in $(seq "$TRACE"); do sleep 1; echo -n "$(per_task "$(rss_kib)") "; done
echo "B/task"
grep -E '^(Rss|Anonymous|Private_Dirty|Shared_Clean)' "/proc/$pid/smaps_rollup"
[ "${KEEP:-0}" = 1 ] && echo "left running: pid $pid, address $addr, data $dir"
exit 0
