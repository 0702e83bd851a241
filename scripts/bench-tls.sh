#!/usr/bin/env bash
# What TLS and --auth cost: the same three-node cluster shape twice — plaintext, and TLS on
# every link (mutual between peers) with --auth, the client presenting the admin certificate —
# benchmarked alternately, REPEAT rounds, the order swapped every other round so drift in the
# machine's load favours neither. Prints each run and the medians with their ratio.
#
#   scripts/bench-tls.sh            (release binaries from target/release; build them first:
#                                    cargo build --release -p percy-server -p percyctl)
#
# Env: REPEAT (3)  DURATION (10s)  WORKLOADS ("cas:64 lock:16")  BIN (target/release)
set -euo pipefail
cd "$(dirname "$0")/.."

REPEAT="${REPEAT:-3}"
DURATION="${DURATION:-10s}"
WORKLOADS="${WORKLOADS:-cas:64 lock:16}"
BIN="$(realpath "${BIN:-target/release}")"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
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
run() {
  local variant="$1" workload="$2" clients="$3" flags=() endpoints="$plain"
  if [ "$variant" = tls+auth ]; then flags=("${secure_flags[@]}"); endpoints="$secure"; fi
  "$BIN/percyctl" "${flags[@]}" --endpoints "$endpoints" bench "$workload" -c "$clients" \
    -d "$DURATION" -o json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["variant"]=sys.argv[1]; print(json.dumps(r))' "$variant" |
    tee -a "$results" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%-9s %-5s c=%-3d %9.0f ops/s  p50 %.2f ms  p99 %.2f ms" % (r["variant"], r["workload"], r["clients"], r["ops_per_s"], r["p50_ms"], r["p99_ms"]))'
}

for round in $(seq 1 "$REPEAT"); do
  order=(plain tls+auth)
  [ $((round % 2)) = 0 ] && order=(tls+auth plain)
  for spec in $WORKLOADS; do
    for variant in "${order[@]}"; do run "$variant" "${spec%%:*}" "${spec##*:}"; done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["workload"], r["clients"], r["variant"])].append(r)
print("\nmedians")
print(f"{'workload':10} {'plain ops/s':>12} {'tls+auth ops/s':>15} {'ratio':>6} {'p50 plain':>10} {'p50 tls':>8}")
for (workload, clients) in sorted({(w, c) for (w, c, _) in runs}):
    plain = runs[(workload, clients, "plain")]
    secure = runs[(workload, clients, "tls+auth")]
    mp = statistics.median(r["ops_per_s"] for r in plain)
    ms = statistics.median(r["ops_per_s"] for r in secure)
    print(f"{workload + ' c=' + str(clients):10} {mp:12.0f} {ms:15.0f} {ms / mp:6.2f} "
          f"{statistics.median(r['p50_ms'] for r in plain):10.2f} "
          f"{statistics.median(r['p50_ms'] for r in secure):8.2f}")
PY
