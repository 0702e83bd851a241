#!/usr/bin/env bash
# The largest resident set the driver reaches on any one input of a directory (a corpus, or an
# AFL queue): `tests/fuzz/peak-rss.sh BINARY TARGET DIR` prints it in MB, with the input.
set -euo pipefail
binary=$1 target=$2 dir=$3
export TMPDIR=${TMPDIR_FOR_FUZZING:-/dev/shm}
best=0 worst_input=
for input in "$dir"/*; do
    /usr/bin/time -f %M -o "$TMPDIR/peak-rss-kb" "$binary" "$target" <"$input" >/dev/null 2>&1 || true
    kb=$(tail -1 "$TMPDIR/peak-rss-kb")
    if [ "${kb:-0}" -gt "$best" ]; then best=$kb worst_input=$input; fi
done
rm -f "$TMPDIR/peak-rss-kb"
echo "$target peak_rss_mb=$((best / 1024)) input=$(basename "$worst_input")"
