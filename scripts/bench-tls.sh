#!/usr/bin/env bash
# What TLS and --auth cost: the same three-node cluster shape twice — plaintext, and TLS on
# every link (mutual between peers) with --auth, the client presenting the admin certificate —
# benchmarked alternately, REPEAT rounds, the order swapped every other round so drift in the
# machine's load favours neither. With ANCHOR_DIR set, each round also runs the same
# workloads on a fresh three-member etcd (the anchor tool, plaintext: it has no TLS options), so
# both Percy variants get a ratio against etcd measured in the same sitting. Prints each run
# and the medians with their ratios.
#
#   scripts/bench-tls.sh            (release binaries from target/release; build them first:
#                                    cargo build --release -p percy-server -p percyctl)
#
# Env: REPEAT (3)  DURATION (10s)  WORKLOADS ("cas:64 claim-random:64 lock:16 lock:64")
#      TASKS (100000: tasks per claim run)  BIN (target/release)  OUT (append every run's JSON
#      line here; default: only printed)  ANCHOR_DIR (a checkout of the anchor tool: add etcd)
set -euo pipefail
cd "$(dirname "$0")/.."

REPEAT="${REPEAT:-3}"
DURATION="${DURATION:-10s}"
WORKLOADS="${WORKLOADS:-cas:64 claim-random:64 lock:16 lock:64}"
TASKS="${TASKS:-100000}"
ANCHOR="${ANCHOR_DIR:-}"
BIN="$(realpath "${BIN:-target/release}")"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$ANCHOR" ] && [ -d "$work/etcd" ] && "$ANCHOR/stop.sh" "$work/etcd" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_cluster NAME SECURE(0|1): three nodes in the background; sets $endpoints.
start_cluster() {
  local name="$1" secure="$2" peers="" ports=()
  endpoints=""
  for id in 1 2 3; do ports+=("$(free_port)"); done
  for id in 1 2 3; do
    peers+="${peers:+,}$id=127.0.0.1:${ports[$((id - 1))]}"
    endpoints+="${endpoints:+,}127.0.0.1:${ports[$((id - 1))]}"
  done
  for id in 1 2 3; do
    local flags=(--node-id "$id" --listen "127.0.0.1:${ports[$((id - 1))]}" --peers "$peers"
      --data-dir "$work/$name-$id")
    if [ "$secure" = 1 ]; then
      flags+=(--tls-cert "$work/certs/node-$id.crt" --tls-key "$work/certs/node-$id.key"
        --tls-ca "$work/certs/ca.crt" --auth)
    fi
    "$BIN/percyd" "${flags[@]}" >"$work/$name-$id.log" 2>&1 &
    pids+=("$!")
  done
}

"$BIN/percyctl" certs init "$work/certs" --nodes 1=127.0.0.1,2=127.0.0.1,3=127.0.0.1 >/dev/null
start_cluster plain 0
plain="$endpoints"
start_cluster secure 1
secure="$endpoints"
secure_flags=(--cacert "$work/certs/ca.crt" --cert "$work/certs/admin.crt" --key "$work/certs/admin.key")
for endpoints in "$plain" "$secure"; do
  flags=()
  [ "$endpoints" = "$secure" ] && flags=("${secure_flags[@]}")
  # A write waits for the leader the cluster elects.
  "$BIN/percyctl" "${flags[@]}" --endpoints "$endpoints" --timeout 60s config set bench-tls ready >/dev/null
done

results="$work/results.jsonl"
show() {
  python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%-9s %-12s c=%-3d %9.0f ops/s  p50 %.2f ms  p99 %.2f ms" % (r["variant"], r["workload"], r["clients"], r["ops_per_s"], r["p50_ms"], r["p99_ms"]))'
}
# record VARIANT COMMAND…: runs a benchmark printing one JSON line, tags it with the variant.
record() {
  local variant="$1"
  shift
  "$@" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["variant"]=sys.argv[1]; print(json.dumps(r))' "$variant" |
    tee -a "$results" ${OUT:+"$OUT"} | show
}
run() {
  local variant="$1" workload="$2" clients="$3" flags=() endpoints="$plain" extra=()
  if [ "$variant" = tls+auth ]; then flags=("${secure_flags[@]}"); endpoints="$secure"; fi
  case "$workload" in claim*) extra=(--tasks "$TASKS") ;; esac
  record "$variant" "$BIN/percyctl" "${flags[@]}" --endpoints "$endpoints" bench "$workload" \
    -c "$clients" -d "$DURATION" "${extra[@]}" -o json
}
# run_etcd WORKLOAD CLIENTS: the same shape on a fresh etcd (the anchor's workload names).
run_etcd() {
  local workload="$1" clients="$2" extra=()
  case "$workload" in
    claim*) extra=(--tasks "$TASKS") ;;
  esac
  local dir="$work/etcd"
  eval "$("$ANCHOR/start-etcd.sh" "$dir")"
  export ETCD_ENDPOINTS
  record etcd "$ANCHOR/target/release/anchor-bench" "etcd-${workload%%-*}" -c "$clients" \
    --duration "${DURATION%s}" --pids-file "$dir/etcd.pids" "${extra[@]}"
  "$ANCHOR/stop.sh" "$dir" >/dev/null 2>&1
  rm -rf "$dir"
}

for round in $(seq 1 "$REPEAT"); do
  order=(plain tls+auth)
  [ -n "$ANCHOR" ] && order+=(etcd)
  [ $((round % 2)) = 0 ] && order=($(printf '%s\n' "${order[@]}" | tac))
  for spec in $WORKLOADS; do
    for variant in "${order[@]}"; do
      if [ "$variant" = etcd ]; then
        run_etcd "${spec%%:*}" "${spec##*:}"
      else
        run "$variant" "${spec%%:*}" "${spec##*:}"
      fi
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    # the anchor names its workloads etcd-cas, etcd-claim, etcd-lock
    workload = {"etcd-cas": "cas", "etcd-claim": "claim-random", "etcd-lock": "lock"}.get(r["workload"], r["workload"])
    runs[(workload, r["clients"], r["variant"])].append(r)
def median(workload, clients, variant, field):
    rs = runs.get((workload, clients, variant))
    return statistics.median(r[field] for r in rs) if rs else None
print("\nmedians (ops/s; ratios > 1 favour Percy)")
print(f"{'workload':18} {'plain':>8} {'tls+auth':>9} {'tls/plain':>9} {'etcd':>8} {'plain/etcd':>10} {'tls/etcd':>9} {'p50 plain/tls ms':>17}")
for (workload, clients) in sorted({(w, c) for (w, c, _) in runs}):
    mp = median(workload, clients, "plain", "ops_per_s")
    ms = median(workload, clients, "tls+auth", "ops_per_s")
    me = median(workload, clients, "etcd", "ops_per_s")
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
    print(f"{workload + ' c=' + str(clients):18} {mp or 0:8.0f} {ms or 0:9.0f} {ratio(ms, mp):>9} "
          f"{me or 0:8.0f} {ratio(mp, me):>10} {ratio(ms, me):>9} "
          f"{median(workload, clients, 'plain', 'p50_ms') or 0:8.2f} / {median(workload, clients, 'tls+auth', 'p50_ms') or 0:.2f}")
PY
