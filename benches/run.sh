#!/usr/bin/env bash
# walstore against MinIO and against the machine's own limits, on loopback only.
#
#   benches/run.sh            full comparison (5 repetitions, ~20 min on 2 cores), rewrites
#                             the results block of benches/README.md
#   benches/run.sh --quick    smoke run (1 repetition, small sizes), README untouched
#   benches/run.sh --reps 7   more repetitions; see `benches/run.sh --help` for the rest
#   benches/run.sh --no-build reuse the walstore binaries the last run built
#
# Installs or builds, idempotently, everything it runs, pinned, under $WALSTORE_CACHE
# (default ~/.cache/walstore):
#   walstore       cargo build --release (then copied, so a rebuild during the run cannot
#                  swap the binary under it)
#   MinIO          go install github.com/minio/minio@$MINIO_VERSION (the final commit)
#   warp           v1.6.1 from the Go module proxy, built with two dependencies replaced,
#                  because the proxy refuses the versions its go.mod pins (see README.md)
#   s3load         benches/s3load (standard library only): seeding, listing, probes
#   WAL-G          v3.0.9, found as the tests find it (ensure_walg in scripts/common.sh:
#                  $WALG_BIN, the cached binary, ../shared/tools, go install); without it
#                  P1/P6 are reported as not run
# The PostgreSQL fixture (a pgbench cluster and 200 real WAL segments) is built once by
# compare.py in /var/tmp/walstore-bench-cache (the postgres user cannot reach ~/.cache).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

# MINIO_VERSION: pinned in scripts/common.sh (the replication tests use the same build).
WARP_VERSION="v1.6.1"
PEERS="$WALSTORE_CACHE/peers"
BENCH_BIN="$WALSTORE_CACHE/bench/bin"
mkdir -p "$PEERS" "$BENCH_BIN"

# --no-build: reuse the walstore binaries the last run copied to $BENCH_BIN (when the shared
# target directory is locked by other builds, or to rerun exactly the same binary).
NO_BUILD=0
args=()
for a in "$@"; do
  if [ "$a" = "-h" ] || [ "$a" = "--help" ]; then exec python3 "$REPO_ROOT/benches/compare.py" --help; fi
  if [ "$a" = "--no-build" ]; then NO_BUILD=1; else args+=("$a"); fi
done
[ "$(id -u)" = 0 ] || { echo "run.sh must run as root (PostgreSQL runs as the postgres user)" >&2; exit 1; }

command -v go >/dev/null || { echo "Go is needed to build MinIO, warp and s3load" >&2; exit 1; }
apt_install zstd iproute2 openssl util-linux
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then apt_install postgresql-15 postgresql-contrib; fi

# walstore and the seeding tool, from this work tree.
if [ "$NO_BUILD" = 1 ] && [ -x "$BENCH_BIN/walstore" ] && [ -x "$BENCH_BIN/walstore-bench-seed" ]; then
  WALSTORE_BUILD_NOTE="--no-build: binary copied $(date -u -r "$BENCH_BIN/walstore" '+%Y-%m-%d %H:%M UTC') from the work tree of then"
else
  ensure_build_deps
  log "building walstore and walstore-bench-seed (release)"
  (cd "$REPO_ROOT" && cargo build --release -p walstore -p walstore-benches --bins >&2)
  install -m 0755 "$CARGO_TARGET_DIR/release/walstore" "$BENCH_BIN/walstore"
  install -m 0755 "$CARGO_TARGET_DIR/release/walstore-bench-seed" "$BENCH_BIN/walstore-bench-seed"
  WALSTORE_BUILD_NOTE="built $(date -u '+%Y-%m-%d %H:%M UTC')"
fi

# MinIO, pinned to the final commit of minio/minio (ensure_minio in scripts/common.sh).
if ! ensure_minio; then
  echo "$MINIO_MISSING" >&2
  exit 1
fi

# warp v1.6.1. Its go.mod pins github.com/minio/minio-go/v7 v7.2.2-0.20260720013402-ab51b38e91a0
# and github.com/minio/madmin-go/v4 v4.6.7, both refused by the module proxy (403). We
# build warp's own v1.6.1 source with minio-go v7.2.1 (the closest release served) and, for
# madmin-go/v4 (only used by --serverprof, never here), madmin-go/v3 v3.0.109 renamed to /v4.
WARP_DIR="$PEERS/warp-$WARP_VERSION"
WARP_EXE="$WARP_DIR/warp"
if [ ! -x "$WARP_EXE" ]; then
  log "building warp $WARP_VERSION"
  rm -rf "$WARP_DIR" && mkdir -p "$WARP_DIR"
  src="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/minio/warp@$WARP_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  madmin="$(cd /tmp && go mod download -json github.com/minio/madmin-go/v3@v3.0.109 | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp -r "$src" "$WARP_DIR/src" && cp -r "$madmin" "$WARP_DIR/madmin-v4shim" && chmod -R u+w "$WARP_DIR"
  sed -i 's#^module github.com/minio/madmin-go/v3#module github.com/minio/madmin-go/v4#' "$WARP_DIR/madmin-v4shim/go.mod"
  (cd "$WARP_DIR/src" \
    && go mod edit -replace github.com/minio/madmin-go/v4=../madmin-v4shim \
                   -replace github.com/minio/minio-go/v7=github.com/minio/minio-go/v7@v7.2.1 \
    && GOFLAGS=-mod=mod go build -trimpath -o "$WARP_EXE" . ) >"$PEERS/warp-install.log" 2>&1 \
    || { echo "warp could not be built; see $PEERS/warp-install.log" >&2; tail -5 "$PEERS/warp-install.log" >&2; exit 1; }
fi

log "building s3load"
(cd "$REPO_ROOT/benches/s3load" && go build -trimpath -o "$BENCH_BIN/s3load" .)

# WAL-G: the same binary the tests run (ensure_walg in scripts/common.sh).
apt_install xz-utils
if ! ensure_walg; then
  log "WARNING: $WALG_MISSING; P1 and P6 will be reported as not run"
fi

export WALSTORE_EXE="$BENCH_BIN/walstore" SEED_EXE="$BENCH_BIN/walstore-bench-seed" MINIO_EXE WARP_EXE \
  S3LOAD_EXE="$BENCH_BIN/s3load" WALG_EXE PG_BIN=/usr/lib/postgresql/15/bin MINIO_VERSION \
  WARP_VERSION="$WARP_VERSION (minio-go v7.2.1, madmin-go v3.0.109 as /v4: see README)" \
  BENCH_COMMAND="benches/run.sh $*" WALSTORE_BUILD_NOTE
exec python3 "$REPO_ROOT/benches/compare.py" ${args[@]+"${args[@]}"}
