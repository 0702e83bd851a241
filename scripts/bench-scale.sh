#!/usr/bin/env bash
# Round three's scale figures, in one sitting, side by side with etcd where it has a counterpart:
#
#   - the whole pipeline: `percyctl bench pipeline --local 3 --workers W --tasks N` (claim → start
#     → complete through real worker runtimes), alternated by round with etcd claims at the same
#     concurrency (`anchor-bench etcd-claim -c W --tasks N`: one transaction per task and no
#     start or completion write, so it is an upper bound of etcd doing the same cycle);
#   - the pipeline with `--exec true` and with `--git`, once per round (figures only);
#   - a million tasks: `bench restart` (RSS per task on every node, restart to serving) and
#     `bench listing` (write latency while the whole task list is paged through);
#   - with HEARTBEAT=1, 100,000 agents at 1 Hz for 5 minutes with a leader kill.
#
#   scripts/bench-scale.sh OUT.jsonl            (release binaries from target/release)
#   scripts/bench-scale.sh --summary OUT.jsonl  (the medians of an earlier run)
#
# Env: REPEAT (3)  WORKERS (64)  TASKS (100000)  EXEC_TASKS (10000)  GIT_TASKS (2000)
#      MILLION (1000000)  FIGURE_REPEAT, MILLION_REPEAT (rounds that run the exec/git pipelines
#      and the million-task runs; default REPEAT)  HEARTBEAT (0)  AGENTS (100000)  BIN (target/release)
#      ANCHOR_DIR (a checkout of the anchor tool; without it the etcd rows are skipped)
#      ROWS (pipeline,figures,million: which groups of rows to run — the pipeline with etcd,
#      the exec/git figures, the million-task runs)
set -euo pipefail
cd "$(dirname "$0")/.."

summarize() {
  python3 - "$1" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    r = json.loads(line)
    if "error" in r:
        print(f"FAILED run: {r}")
        continue
    runs[r["row"]].append(r)
def med(row, field):
    values = [r[field] for r in runs.get(row, []) if isinstance(r.get(field), (int, float))]
    return statistics.median(values) if values else None
def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"
print(f"{'row':40} {'runs':>4} {'median':>12}  unit            steal % (max)")
def show(row, field, unit, digits=0):
    rs = runs.get(row, [])
    steal = max((r.get("machine_steal_pct") or 0) for r in rs) if rs else None
    print(f"{row + ' ' + field:40} {len(rs):>4} {fmt(med(row, field), digits):>12}  {unit:15} {fmt(steal, 2)}")
show("pipeline", "tasks_per_s", "tasks/s")
show("pipeline", "per_task_ms", "ms/task/worker", 2)
show("etcd-claim", "ops_per_s", "claims/s")
p, e = med("pipeline", "tasks_per_s"), med("etcd-claim", "ops_per_s")
if p and e:
    print(f"{'pipeline ÷ etcd claims':40} {'':>4} {p / e:>11.2f}×")
show("pipeline-exec", "tasks_per_s", "tasks/s")
show("pipeline-exec", "per_task_ms", "ms/task/worker", 2)
show("pipeline-git", "tasks_per_s", "tasks/s")
show("pipeline-git", "per_task_ms", "ms/task/worker", 2)
for r in runs.get("restart", []):
    r["rss_max"] = max((x for x in r.get("rss_bytes_per_task", []) if x is not None), default=None)
    r["rss_peak_max"] = max((x for x in r.get("rss_peak_bytes_per_task", []) if x is not None), default=None)
show("restart", "rss_max", "B/task (worst node)")
show("restart", "rss_peak_max", "B/task (worst, at snapshot)")
show("restart", "restart_to_linearizable_read_ms", "ms", 0)
for r in runs.get("listing", []):
    r["idle_p99_ms"] = r["idle"]["p99_ms"]
    r["listing_p99_ms"] = r["during_listing"]["p99_ms"]
for field, unit in (("idle_p99_ms", "ms"), ("listing_p99_ms", "ms"), ("p99_ratio", "×")):
    show("listing", field, unit, 2)
for r in runs.get("heartbeat", []):
    r["false_expiries"] = r.get("verify", {}).get("false_expiries")
for field, unit in (("ops_per_s", "beats/s"), ("leader_cpu_pct_of_one_core", "% of a core"),
                    ("false_expiries", "agents"), ("raft_entries_per_heartbeat", "entries")):
    show("heartbeat", field, unit, 3)
PY
}

if [ "${1:-}" = --summary ]; then
  summarize "${2:?usage: bench-scale.sh --summary OUT.jsonl}"
  exit 0
fi
OUT="$(realpath -m "${1:?usage: bench-scale.sh OUT.jsonl}")"
REPEAT="${REPEAT:-3}"
WORKERS="${WORKERS:-64}"
TASKS="${TASKS:-100000}"
EXEC_TASKS="${EXEC_TASKS:-10000}"
GIT_TASKS="${GIT_TASKS:-2000}"
MILLION="${MILLION:-1000000}"
FIGURE_REPEAT="${FIGURE_REPEAT:-$REPEAT}"
MILLION_REPEAT="${MILLION_REPEAT:-$REPEAT}"
AGENTS="${AGENTS:-100000}"
ROWS=",${ROWS:-pipeline,figures,million},"
wants() { case "$ROWS" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
BIN="$(realpath "${BIN:-target/release}")"
ANCHOR="${ANCHOR_DIR:-}"
etcd_dir=""
cleanup() { [ -n "$etcd_dir" ] && "$ANCHOR/stop.sh" "$etcd_dir" >/dev/null 2>&1; return 0; }
trap cleanup EXIT

steal_ticks() { awk '/^cpu / {print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# record ROW COMMAND…: runs a benchmark that prints one JSON object, tags it with ROW and the
# host's steal time over the run (if the benchmark did not report it), appends it to OUT.
record() {
  local row="$1"
  shift
  local before after json
  before="$(steal_ticks)"
  if ! json="$("$@")"; then
    echo "{\"row\": \"$row\", \"error\": \"$*\"}" >>"$OUT"
    echo "$(date +%T) $row FAILED"
    return 0
  fi
  after="$(steal_ticks)"
  printf '%s' "$json" | python3 -c '
import json, sys
row, before, after = sys.argv[1:4]
r = json.load(sys.stdin)
r["row"] = row
(s0, t0), (s1, t1) = (map(int, before.split())), (map(int, after.split()))
r.setdefault("machine_steal_pct", round(100 * (s1 - s0) / max(t1 - t0, 1), 3))
print(json.dumps(r))' "$row" "$before" "$after" | tee -a "$OUT" | cut -c1-160
}

ctl=("$BIN/percyctl" -o json bench)
for round in $(seq 1 "$REPEAT"); do
  echo "== round $round ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
  percy() { record pipeline "${ctl[@]}" pipeline --local 3 --workers "$WORKERS" --tasks "$TASKS"; }
  etcd() {
    [ -n "$ANCHOR" ] || return 0
    etcd_dir="$(mktemp -d /tmp/bench-scale-etcd.XXXX)"
    eval "$("$ANCHOR/start-etcd.sh" "$etcd_dir" 2>/dev/null)"
    export ETCD_ENDPOINTS
    record etcd-claim "$ANCHOR/target/release/anchor-bench" etcd-claim -c "$WORKERS" \
      --tasks "$TASKS" --duration 10 --pids-file "$etcd_dir/etcd.pids"
    "$ANCHOR/stop.sh" "$etcd_dir" >/dev/null 2>&1
    rm -rf "$etcd_dir"
    etcd_dir=""
  }
  if ! wants pipeline; then :; elif [ $((round % 2)) = 1 ]; then percy; etcd; else etcd; percy; fi
  if wants figures && [ "$round" -le "$FIGURE_REPEAT" ]; then
    record pipeline-exec "${ctl[@]}" pipeline --local 3 --workers "$WORKERS" --tasks "$EXEC_TASKS" --exec true
    record pipeline-git "${ctl[@]}" pipeline --local 3 --workers 8 --tasks "$GIT_TASKS" --git
  fi
  if wants million && [ "$round" -le "$MILLION_REPEAT" ]; then
    record restart "${ctl[@]}" restart --local 3 --tasks "$MILLION"
    record listing "${ctl[@]}" listing --local 3 --tasks "$MILLION"
  fi
done
if [ "${HEARTBEAT:-0}" = 1 ]; then
  record heartbeat "${ctl[@]}" heartbeat --local 3 --agents "$AGENTS" --rate 1 -d 5m \
    --leader-change-at 150s
fi
summarize "$OUT"
