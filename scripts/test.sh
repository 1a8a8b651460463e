#!/usr/bin/env bash
# Runs the whole test suite: lints, unit tests, integration tests with the AWS
# SDK for Rust and the crash test, then the real clients (boto3, AWS CLI,
# pgBackRest, WAL-G with PostgreSQL) against a freshly built release binary.
# Installs what it needs on first use (see install-test-deps.sh).
# Every server a test needs is started on 127.0.0.1 with an ephemeral port and
# a temporary data directory, and stopped afterwards.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

ensure_build_deps
# One profile (release) for every step, so RocksDB's C++ is compiled once and
# the binary the client suites use is the one the Rust tests ran against.
log "building (release, all targets)"
cargo build --release --locked --workspace --all-targets
log "format and lints"
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings

log "unit and integration tests (cargo test)"
cargo test --release --locked --workspace
export WALSTORE_EXE="$CARGO_TARGET_DIR/release/walstore"

"$REPO_ROOT/scripts/install-test-deps.sh"

log "real clients (pytest tests/)"
# WALG_EXE (or WALG_MISSING, the reason the WAL-G tests skip outside CI) for the suites.
ensure_walg || true
ensure_minio || true
export WALSTORE_EXE
"$WALSTORE_VENV/bin/python" -m pytest -q -rs tests/ "$@"
