#!/usr/bin/env bash
# The long fuzz run: AFL++ (through `cargo afl`) on each named target, one after another, until
# it has executed EXECS inputs, then a line of its numbers (the table in RESULTS.md).
#
#   tests/fuzz/afl-run.sh BINARY OUT_DIR EXECS TARGET...
#
# BINARY is the driver built by `cargo afl build -p percy-fuzz --features afl --release`;
# OUT_DIR/<target>/ gets AFL's findings (queue, crashes, hangs, fuzzer_stats).
#
# -m 512: the target may use at most 512 MB of address space, so an unbounded allocation a
# damaged length asks for aborts and is reported as a crash instead of passing unnoticed.
# -t 1000: an input that runs longer than a second is a hang.
set -euo pipefail

binary=$1
out=$2
execs=$3
shift 3
corpus="$(cd "$(dirname "$0")" && pwd)/corpus"

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
# wal_segment writes a data dir per input (tempfile honours TMPDIR) and opening the log fsyncs
# it: on disk that is ~300 inputs/s, on tmpfs (where fsync costs nothing) several thousand.
export TMPDIR=${TMPDIR_FOR_FUZZING:-/dev/shm}

for target in "$@"; do
    started=$(date +%s)
    cargo afl fuzz -i "$corpus/$target" -o "$out/$target" -m 512 -t 1000 -E "$execs" \
        -- "$binary" "$target" >"$out/$target.log" 2>&1 || echo "$target: afl-fuzz exited with $?"
    stats="$out/$target/default/fuzzer_stats"
    value() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    seconds=$(($(date +%s) - started))
    echo "$target execs_done=$(value execs_done) seconds=$seconds execs_per_sec=$(value execs_per_sec)" \
        "corpus_count=$(value corpus_count) saved_crashes=$(value saved_crashes)" \
        "saved_hangs=$(value saved_hangs) peak_rss_mb=$(value peak_rss_mb)"
done
