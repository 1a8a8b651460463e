# Shared settings of walstore's scripts (sourced, not executed).
# Everything a script installs or builds lives under $WALSTORE_CACHE so a warm
# machine does not rebuild RocksDB, WAL-G or the Python clients.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WALSTORE_CACHE="${WALSTORE_CACHE:-$HOME/.cache/walstore}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WALSTORE_CACHE/target}"
export WALSTORE_VENV="${WALSTORE_VENV:-$WALSTORE_CACHE/venv}"
export WALSTORE_BIN_DIR="$WALSTORE_CACHE/bin"
# WAL-G pinned version (the real client the product is judged by).
export WALG_VERSION="v3.0.9"
mkdir -p "$WALSTORE_CACHE" "$WALSTORE_BIN_DIR"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Installs Debian packages that are missing (idempotent; apt-get update once).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ ! -f "$WALSTORE_CACHE/.apt-updated" ] || [ -n "$(find "$WALSTORE_CACHE/.apt-updated" -mmin +1440 2>/dev/null)" ]; then
    as_root apt-get update -qq && touch "$WALSTORE_CACHE/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# What building walstore needs: a Rust toolchain and libclang for RocksDB's bindings.
ensure_build_deps() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
  apt_install libclang-dev clang build-essential pkg-config
}

build_walstore() {
  ensure_build_deps
  log "building walstore (release; RocksDB is compiled once into $CARGO_TARGET_DIR)"
  (cd "$REPO_ROOT" && cargo build --release --locked -p walstore >&2)
  export WALSTORE_EXE="$CARGO_TARGET_DIR/release/walstore"
}

# Where the WAL-G binary the tests and benches run comes from, first found wins:
#   1. $WALG_BIN, when it reports $WALG_VERSION;
#   2. the cached $WALSTORE_BIN_DIR/wal-g of that version (left by an earlier install);
#   3. shared/tools/wal-g-$WALG_VERSION-linux-amd64.xz beside the checkout (WAL-G built from its
#      tagged source; see its README), unpacked only if its sha256 matches the .sha256 beside it;
#   4. `go install github.com/wal-g/wal-g/main/pg@$WALG_VERSION` (the Go module proxy refuses it
#      today, but a proxy that serves it works).
# Sets WALG_EXE to the binary, or to "" with WALG_MISSING saying why and how to provide one.
# MinIO, pinned to the final commit of minio/minio: the peer of the benchmarks and the
# replication target of tests/test_replication.py (one pin, one cached binary).
export MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"   # minio/minio 7aac2a2, 2026-02-12
export WALSTORE_PEERS="$WALSTORE_CACHE/peers"
# Sets MINIO_EXE, installing MinIO once with `go install` (a few minutes); on failure
# sets MINIO_MISSING to the reason and returns 1.
ensure_minio() {
  MINIO_EXE="$WALSTORE_PEERS/minio-$MINIO_VERSION/minio"
  export MINIO_EXE
  [ -x "$MINIO_EXE" ] && return 0
  mkdir -p "$WALSTORE_PEERS"
  log "installing MinIO $MINIO_VERSION (go install; a few minutes, once)"
  if GOBIN="$(dirname "$MINIO_EXE")" GOTOOLCHAIN=local go install "github.com/minio/minio@$MINIO_VERSION" \
       >"$WALSTORE_PEERS/minio-install.log" 2>&1; then
    return 0
  fi
  MINIO_MISSING="MinIO $MINIO_VERSION could not be installed: $(grep -E "403|not available|refused|error" "$WALSTORE_PEERS/minio-install.log" | head -1) (log: $WALSTORE_PEERS/minio-install.log)"
  export MINIO_MISSING
  unset MINIO_EXE
  return 1
}

ensure_walg() {
  local walg="$WALSTORE_BIN_DIR/wal-g" tried=()
  WALG_EXE="" WALG_MISSING=""
  walg_ok() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q "version $WALG_VERSION"; }
  if [ -n "${WALG_BIN:-}" ]; then
    if walg_ok "$WALG_BIN"; then WALG_EXE="$WALG_BIN"; export WALG_EXE; return 0; fi
    tried+=("WALG_BIN=$WALG_BIN is not an executable wal-g $WALG_VERSION")
  fi
  if walg_ok "$walg"; then WALG_EXE="$walg"; export WALG_EXE; return 0; fi

  local name="wal-g-$WALG_VERSION-linux-amd64" dir xz=""
  while IFS= read -r dir; do
    if [ -f "$dir/$name.xz" ] && [ -f "$dir/$name.sha256" ]; then xz="$dir/$name.xz"; break; fi
  done < <(walg_shared_tools_dirs)
  if [ -n "$xz" ]; then
    local tmp want got
    tmp="$(mktemp "$WALSTORE_BIN_DIR/.wal-g.XXXXXX")"
    want="$(tr -d '[:space:]' < "${xz%.xz}.sha256")"
    if xz -dc "$xz" > "$tmp" 2>/dev/null; then
      got="$(sha256sum "$tmp" | cut -d' ' -f1)"
      if [ "$got" = "$want" ]; then
        chmod 0755 "$tmp" && mv -f "$tmp" "$walg"
        log "installed WAL-G $WALG_VERSION from $xz (sha256 checked)"
        if walg_ok "$walg"; then WALG_EXE="$walg"; export WALG_EXE; return 0; fi
        tried+=("$xz unpacked but does not report $WALG_VERSION")
      else
        tried+=("$xz: sha256 $got does not match ${xz%.xz}.sha256 ($want); not used")
      fi
    else
      tried+=("$xz could not be unpacked (is xz-utils installed?)")
    fi
    rm -f "$tmp"
  else
    tried+=("no shared/tools/$name.xz found next to the checkout")
  fi

  if command -v go >/dev/null; then
    local gobin
    gobin="$(mktemp -d)"
    log "installing WAL-G $WALG_VERSION with go install"
    if GOBIN="$gobin" go install "github.com/wal-g/wal-g/main/pg@$WALG_VERSION" >"$WALSTORE_CACHE/walg-install.log" 2>&1 \
       && install -m 0755 "$gobin/pg" "$walg" && walg_ok "$walg"; then
      rm -rf "$gobin"; WALG_EXE="$walg"; export WALG_EXE; return 0
    fi
    rm -rf "$gobin"
    tried+=("go install was refused (see $WALSTORE_CACHE/walg-install.log)")
  else
    tried+=("Go is not installed")
  fi
  local why
  why="$(printf '%s; ' "${tried[@]}")"
  WALG_MISSING="WAL-G $WALG_VERSION is missing (${why%; }): set WALG_BIN to a wal-g $WALG_VERSION binary or put shared/tools/$name.xz beside the checkout"
  export WALG_EXE WALG_MISSING
  return 1
}

# Candidate shared/tools directories: $WALSTORE_SHARED_TOOLS, then shared/tools next to this
# checkout or any of its parents, then next to the repository it was cloned from (a CI clone in
# /tmp finds the tools of the checkout it came from).
walg_shared_tools_dirs() {
  [ -n "${WALSTORE_SHARED_TOOLS:-}" ] && echo "$WALSTORE_SHARED_TOOLS"
  local d="$REPO_ROOT" origin
  while [ "$d" != "/" ]; do d="$(dirname "$d")"; echo "$d/shared/tools"; done
  origin="$(git -C "$REPO_ROOT" config --get remote.origin.url 2>/dev/null || true)"
  if [ -n "$origin" ] && [ -d "$origin" ]; then
    d="$(cd "$origin" && pwd)"
    while [ "$d" != "/" ]; do d="$(dirname "$d")"; echo "$d/shared/tools"; done
  fi
}
