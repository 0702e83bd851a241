#!/usr/bin/env bash
# Lock handoffs of two Percy builds and etcd, alternated by round (16 and 64 contenders):
#   OLD_BIN=dir-with-old-percyctl+percyd NEW_BIN=dir ANCHOR_DIR=anchor-bench-checkout \
#     scripts/bench-lock-ab.sh OUT.jsonl
# Each build's directory holds its percyctl and percyd (`--local 3` runs the percyd next to it).
set -u
OUT=${1:?usage: bench-lock-ab.sh OUT.jsonl}
ANCHOR=${ANCHOR_DIR:?set ANCHOR_DIR to a checkout of the anchor-bench load generator}
for round in 1 2 3; do
  for c in 16 64; do
    for v in old new; do
      bin=$OLD_BIN; [ "$v" = new ] && bin=$NEW_BIN
      "$bin/percyctl" -o json bench lock --local 3 -c $c -d 10s --tag "$v" >> $OUT 2>/dev/null || echo "{\"error\":\"$v $c\"}" >> $OUT
      echo "$(date +%T) $v c=$c load=$(cut -d' ' -f1 /proc/loadavg): $(tail -1 $OUT | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("ops_per_s"), d.get("p99_ms"))')"
      sleep 2
    done
    dir=$(mktemp -d /tmp/etcd-bench.XXXX)
    out=$("$ANCHOR/start-etcd.sh" "$dir"); eval "$out"; export ETCD_ENDPOINTS
    $ANCHOR/target/release/anchor-bench etcd-lock -c $c --duration 10 --pids-file "$dir/etcd.pids" --tag etcd >> $OUT 2>/dev/null || echo "{\"error\":\"etcd $c\"}" >> $OUT
    echo "$(date +%T) etcd c=$c load=$(cut -d' ' -f1 /proc/loadavg): $(tail -1 $OUT | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("ops_per_s"), d.get("p99_ms"))')"
    "$ANCHOR/stop.sh" "$dir" >/dev/null 2>&1; rm -rf "$dir"
    sleep 2
  done
done
