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
