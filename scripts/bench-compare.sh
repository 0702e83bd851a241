#!/usr/bin/env bash
# Percy vs etcd vs NATS JetStream, side by side, in one session on this machine.
#
#   scripts/bench-compare.sh [OUT.jsonl]          run everything, then print the table
#   scripts/bench-compare.sh --summary OUT.jsonl  only print the table of an earlier run
#
# Runs, alternately and REPEAT times: Percy (`percyctl bench … --local 3`: three percyd
# processes on loopback, fsync on, a fresh cluster per run), etcd 3.4 (3 members) and NATS
# JetStream R3 KV with `sync_interval: always`, using the anchor tool (anchor-bench, a separate project; ANCHOR_DIR)
# (same JSON fields, same workload shapes). The order of the three systems is reversed every
# other round so that drift in machine load does not favour one of them. Every line of OUT is
# one run; the summary takes medians over the repeats and prints ratios.
#
# Env: DURATION (s, 10)  REPEAT (2)  CLIENTS ("1 64")  LOCK_CLIENTS ("16")  TASKS (100000,
#      claim workloads at the largest C)  SMALL_TASKS (10000, claim workloads at C=1, as the
#      anchor)  NATS_VARIANTS ("2.10:always"; add "2.10:default" for the non-durable stretch
#      reference)  HEARTBEAT (1: run the heartbeat workload once per round)  ANCHOR_DIR
#      (ANCHOR_DIR, required)  KEEP=1 keeps the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

summarize() {
  python3 - "$1" <<'PY'
import json, statistics, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = defaultdict(list)
for r in rows:
    if r.get("workload") == "fsync-probe":
        w = r["wal_fdatasync"]
        print(f"fsync probe: 4 KiB overwrite+fdatasync {w['per_s']:.0f}/s (p50 {w['p50_ms']} ms)\n")
        continue
    if "error" in r:
        print(f"FAILED run: {r}")
        continue
    variant = None
    if r["workload"].startswith("nats") and "sync=default" in r.get("tag", ""):
        variant = "non-durable"
    if r.get("lease_mode") == "PerLock":
        variant = "lease per lock"
    key = (r["workload"], r["clients"], r.get("tasks"), r.get("consistency"), variant)
    runs[key].append(r)

def med(key, field):
    key = tuple(key) + (None,) * (5 - len(key))
    vals = [r[field] for r in runs.get(key, []) if field in r]
    return statistics.median(vals) if vals else None

def n(key):
    return len(runs.get(tuple(key) + (None,) * (5 - len(key)), []))

def busy(key):
    return med(key, "machine_busy_pct")

def verify(key):
    rs = runs.get(tuple(key) + (None,) * (5 - len(key)), [])
    if not rs:
        return "-"
    bad = [r for r in rs if r.get("verify") and not r["verify"].get("ok")]
    return "FAIL" if bad else "ok"

def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"

def ratio(a, b, lower_is_better=False):
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    return f"{(b / a) if lower_is_better else (a / b):.2f}x"

cmax = max([k[1] for k in runs] or [64])
big = max([k[2] or 0 for k in runs if k[0] in ("etcd-claim", "claim-random")] or [0]) or None
small = min([k[2] for k in runs if k[0] in ("etcd-claim", "claim-random") and k[2]] or [0]) or None
lin = "linearizable"
# One pair of lock rows per contender count measured (LOCK_CLIENTS).
lock_clients = sorted({k[1] for k in runs if k[0] in ("lock", "etcd-lock")})
lines = [
    # label, percy key, etcd key, nats key, field, lower_is_better, digits
    ("CAS writes/s", ("cas", cmax, None, None), ("etcd-cas", cmax, None, None), ("nats-cas", cmax, None, None), "ops_per_s", False, 0),
    ("CAS p99 ms", ("cas", cmax, None, None), ("etcd-cas", cmax, None, None), ("nats-cas", cmax, None, None), "p99_ms", True, 1),
    ("CAS writes/s", ("cas", 1, None, None), ("etcd-cas", 1, None, None), ("nats-cas", 1, None, None), "ops_per_s", False, 0),
    ("CAS p50 ms", ("cas", 1, None, None), ("etcd-cas", 1, None, None), ("nats-cas", 1, None, None), "p50_ms", True, 2),
    ("CAS p99 ms", ("cas", 1, None, None), ("etcd-cas", 1, None, None), ("nats-cas", 1, None, None), "p99_ms", True, 2),
    (f"claims/s (random CAS, {big} tasks)", ("claim-random", cmax, big, None), ("etcd-claim", cmax, big, None), ("nats-claim", cmax, big, None), "ops_per_s", False, 0),
    ("claim attempts/s", ("claim-random", cmax, big, None), ("etcd-claim", cmax, big, None), ("nats-claim", cmax, big, None), "attempts_per_s", False, 0),
    ("claim p99 ms", ("claim-random", cmax, big, None), ("etcd-claim", cmax, big, None), ("nats-claim", cmax, big, None), "p99_ms", True, 1),
    (f"claim-next+complete/s ({big} tasks)", ("claim-next", cmax, big, None), ("etcd-claim", cmax, big, None), ("nats-claim", cmax, big, None), "ops_per_s", False, 0),
    (f"claims/s (random CAS, {small} tasks)", ("claim-random", 1, small, None), ("etcd-claim", 1, small, None), ("nats-claim", 1, small, None), "ops_per_s", False, 0),
    ("claim p50 ms", ("claim-random", 1, small, None), ("etcd-claim", 1, small, None), ("nats-claim", 1, small, None), "p50_ms", True, 2),
] + [
    row
    for c in lock_clients
    for row in (
        ("lock handoffs/s", ("lock", c, None, None), ("etcd-lock", c, None, None), None, "ops_per_s", False, 0),
        ("lock acquire p99 ms", ("lock", c, None, None), ("etcd-lock", c, None, None), None, "p99_ms", True, 1),
    )
] + [
    ("linearizable reads/s", ("read", cmax, None, lin), ("etcd-read", cmax, None, lin), None, "ops_per_s", False, 0),
    ("linearizable reads/s", ("read", 1, None, lin), ("etcd-read", 1, None, lin), None, "ops_per_s", False, 0),
    ("read p50 ms", ("read", 1, None, lin), ("etcd-read", 1, None, lin), None, "p50_ms", True, 2),
]
print("| metric | C | Percy | etcd | Percy/etcd | NATS | Percy/NATS | runs P/E/N | box busy % P/E/N | verify P/E/N |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
for label, p, e, nk, field, lower, d in lines:
    pv, ev = med(p, field), med(e, field)
    nv = med(nk, field) if nk else None
    if pv is None and ev is None:
        continue
    print(f"| {label} | {p[1]} | {fmt(pv, d)} | {fmt(ev, d)} | {ratio(pv, ev, lower)} "
          f"| {fmt(nv, d)} | {ratio(pv, nv, lower) if nk else '-'} "
          f"| {n(p)}/{n(e)}/{n(nk) if nk else '-'} "
          f"| {fmt(busy(p))}/{fmt(busy(e))}/{fmt(busy(nk)) if nk else '-'} "
          f"| {verify(p)}/{verify(e)}/{verify(nk) if nk else '-'} |")
for key in sorted(k for k in runs if k[0] == "heartbeat"):
    rs = runs[key]
    print(f"\nheartbeat ({n(key)} runs, medians): {med(key, 'ops_per_s'):.0f} heartbeats/s accepted of "
          f"{rs[0].get('offered_heartbeats_per_s')} offered, raft entries/s {med(key, 'raft_entries_per_s')}, "
          f"entries/heartbeat {med(key, 'raft_entries_per_heartbeat')}, leader CPU "
          f"{med(key, 'leader_cpu_pct_of_one_core')} % of one core, p99 {med(key, 'p99_ms')} ms, box busy {busy(key):.0f} %")
print("\nEvery run (medians above):")
for key in sorted(runs, key=lambda k: (k[0], k[1], k[2] or 0)):
    # Percy's runs also say how much CPU the hypervisor stole (slow runs on a VM have a lot).
    steal = lambda r: f" steal {r['machine_steal_pct']:.0f}%" if "machine_steal_pct" in r else ""
    vals = ", ".join(f"{r['ops_per_s']:.0f}/s p99 {r['p99_ms']:.1f} ms busy {r['machine_busy_pct']:.0f}%{steal(r)}" for r in runs[key])
    extra = "".join(f" {x}" for x in key[3:] if x)
    print(f"- {key[0]} C={key[1]}{' tasks=' + str(key[2]) if key[2] else ''}{extra}: {vals}")
PY
}

if [ "${1:-}" = "--summary" ]; then
  summarize "${2:?usage: bench-compare.sh --summary OUT.jsonl}"
  exit 0
fi

OUT=${1:-bench-results/compare-$(date +%Y%m%d-%H%M%S).jsonl}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-2}
CLIENTS=${CLIENTS:-"1 64"}
LOCK_CLIENTS=${LOCK_CLIENTS:-"16"}
TASKS=${TASKS:-100000}
SMALL_TASKS=${SMALL_TASKS:-10000}
NATS_VARIANTS=${NATS_VARIANTS:-"2.10:always"}
HEARTBEAT=${HEARTBEAT:-1}
ANCHOR=$(cd "${ANCHOR_DIR:?set ANCHOR_DIR to a checkout of the anchor-bench load generator}" && pwd)
NATS210_BIN=${NATS210_BIN:-/opt/anchor-bench/nats-server-2.10/usr/sbin/nats-server}
CMAX=$(echo $CLIENTS | tr ' ' '\n' | sort -n | tail -1)
PERCYCTL=target/release/percyctl
ABENCH="$ANCHOR/target/release/anchor-bench"

[ -x "$PERCYCTL" ] && [ -x target/release/percyd ] ||
  cargo build --release -p percyctl -p percy-server
[ -x "$ABENCH" ] || (cd "$ANCHOR" && cargo build --release)

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
WORK=$(mktemp -d /tmp/bench-compare.XXXXXX)
cleanup() {
  for d in "$WORK"/*/; do
    [ -d "$d" ] && "$ANCHOR/stop.sh" "$d" >/dev/null 2>&1 || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
record() { # system workload C cmd...
  local sys=$1 wl=$2 c=$3
  shift 3
  log "$sys $wl C=$c (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  if "$@" >>"$OUT"; then
    tail -n 1 "$OUT" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("   ok/s=%s attempts/s=%s p50=%sms p99=%sms busy=%s%% verify=%s" % (d.get("ops_per_s"), d.get("attempts_per_s"), d.get("p50_ms"), d.get("p99_ms"), d.get("machine_busy_pct"), (d.get("verify") or {}).get("ok", "-")))' >&2
  else
    log "FAILED: $sys $wl C=$c"
    printf '{"workload":"%s","clients":%s,"system":"%s","error":"run failed, see stderr"}\n' "$wl" "$c" "$sys" >>"$OUT"
  fi
  sleep 2
}

PTAG="$($PERCYCTL --version | tr -d '\n') local3 fsync=always"
percy() { # workload C args...
  local wl=$1 c=$2
  shift 2
  record percy "$wl" "$c" "$PERCYCTL" -o json bench "$wl" --local 3 -c "$c" -d "${DURATION}s" --tag "$PTAG" "$@"
}

percy_round() {
  for c in $CLIENTS; do
    percy cas "$c"
    if [ "$c" = "$CMAX" ]; then t=$TASKS; else t=$SMALL_TASKS; fi
    percy claim-random "$c" --tasks "$t"
    percy claim-next "$c" --tasks "$t"
    percy read "$c"
  done
  for c in $LOCK_CLIENTS; do percy lock "$c"; done
  [ "$HEARTBEAT" = 1 ] && percy heartbeat 4 --connections 4 --agents 10000 --rate 1
  return 0
}

etcd_round() {
  local dir="$WORK/etcd-$1" out
  out=$("$ANCHOR/start-etcd.sh" "$dir")
  eval "$out"
  export ETCD_ENDPOINTS
  local tag
  tag="etcd-$(etcd --version | sed -n 's/^etcd Version: //p') fsync=default"
  for c in $CLIENTS; do
    if [ "$c" = "$CMAX" ]; then t=$TASKS; else t=$SMALL_TASKS; fi
    for wl in etcd-cas etcd-read; do
      record etcd "$wl" "$c" "$ABENCH" "$wl" -c "$c" --duration "$DURATION" --pids-file "$dir/etcd.pids" --tag "$tag"
    done
    record etcd etcd-claim "$c" "$ABENCH" etcd-claim -c "$c" --tasks "$t" --duration "$DURATION" --pids-file "$dir/etcd.pids" --tag "$tag"
  done
  for c in $LOCK_CLIENTS; do
    record etcd etcd-lock "$c" "$ABENCH" etcd-lock -c "$c" --duration "$DURATION" --pids-file "$dir/etcd.pids" --tag "$tag"
  done
  "$ANCHOR/stop.sh" "$dir" >/dev/null
}

nats_round() {
  local v ver sync nbin dir out tag
  for v in $NATS_VARIANTS; do
    ver=${v%%:*}
    sync=${v#*:}
    case "$ver" in
      2.10) nbin=$NATS210_BIN ;;
      2.9) nbin=$(command -v nats-server) ;;
      *) nbin=$ver ;;
    esac
    [ -x "$nbin" ] || { log "skipping NATS $v: no $nbin (run $ANCHOR/install-deps.sh)"; continue; }
    dir="$WORK/nats-$1-$sync"
    out=$(NATS_SERVER_BIN="$nbin" NATS_SYNC="$sync" "$ANCHOR/start-nats.sh" "$dir")
    eval "$out"
    export NATS_URLS
    tag="nats-$("$nbin" --version | sed -n 's/.*v\([0-9.]*\).*/\1/p') sync=$sync"
    for c in $CLIENTS; do
      if [ "$c" = "$CMAX" ]; then t=$TASKS; else t=$SMALL_TASKS; fi
      record "nats-$sync" nats-cas "$c" "$ABENCH" nats-cas -c "$c" --duration "$DURATION" --pids-file "$dir/nats.pids" --tag "$tag"
      record "nats-$sync" nats-claim "$c" "$ABENCH" nats-claim -c "$c" --tasks "$t" --duration "$DURATION" --pids-file "$dir/nats.pids" --tag "$tag"
    done
    "$ANCHOR/stop.sh" "$dir" >/dev/null
  done
}

: >"$OUT"
log "fsync probe"
python3 "$ANCHOR/fsync-probe.py" "$WORK/fsync" 3 >>"$OUT"
rm -rf "$WORK/fsync"
for r in $(seq 1 "$REPEAT"); do
  log "round $r of $REPEAT"
  if [ $((r % 2)) = 1 ]; then
    percy_round; etcd_round "$r"; nats_round "$r"
  else
    nats_round "$r"; etcd_round "$r"; percy_round
  fi
done
log "done: $OUT"
summarize "$OUT"
