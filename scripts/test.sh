#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every crate's tests
# (unit, property, in-process cluster, real-process cluster and the short fault-injection runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental artifacts, which double the target size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `cargo test --workspace` builds percyd and percyctl for their own crates' tests; the fault
# suite and runtime tests use those instead of building them again alone (a per-package build
# has other features, so it would recompile half the dependency tree).
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug"
export PERCYD_BIN="${PERCYD_BIN:-$target/percyd}" PERCYCTL_BIN="${PERCYCTL_BIN:-$target/percyctl}"
cargo test --workspace --locked
