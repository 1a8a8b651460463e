#!/usr/bin/env bash
# Installs what the client test suites need, idempotently:
# PostgreSQL and pgBackRest from Debian, boto3 + AWS CLI + pytest in a
# virtualenv (current releases, refreshed daily), and WAL-G $WALG_VERSION.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_install postgresql postgresql-contrib pgbackrest daemontools python3-venv

if [ ! -x "$WALSTORE_VENV/bin/python" ]; then
  log "creating the Python virtualenv $WALSTORE_VENV"
  python3 -m venv "$WALSTORE_VENV"
fi
stamp="$WALSTORE_VENV/.installed"
# awscrt: botocore needs it to compute CRC32C and CRC64NVME (without it those
# boto3 checksum tests are skipped with MissingDependencyException as the reason).
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ] \
   || ! "$WALSTORE_VENV/bin/python" -c "import awscrt" 2>/dev/null; then
  log "installing boto3, awscli, awscrt, pytest (current releases)"
  "$WALSTORE_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$WALSTORE_VENV/bin/pip" install -q --upgrade boto3 awscli awscrt pytest >/dev/null
  touch "$stamp"
fi

# WAL-G: `go install github.com/wal-g/wal-g/main/pg@$WALG_VERSION` (the binary is
# called `pg`; we install it as `wal-g`). A binary already at
# $WALSTORE_BIN_DIR/wal-g reporting the pinned version is reused, and
# $WALG_BIN may point at one built elsewhere.
walg="$WALSTORE_BIN_DIR/wal-g"
if [ -n "${WALG_BIN:-}" ] && [ -x "$WALG_BIN" ]; then
  ln -sf "$WALG_BIN" "$walg"
fi
if ! { [ -x "$walg" ] && "$walg" --version 2>/dev/null | grep -q "$WALG_VERSION"; }; then
  if command -v go >/dev/null; then
    log "installing WAL-G $WALG_VERSION with go install"
    gobin="$(mktemp -d)"
    if GOBIN="$gobin" go install "github.com/wal-g/wal-g/main/pg@$WALG_VERSION" >"$WALSTORE_CACHE/walg-install.log" 2>&1; then
      install -m 0755 "$gobin/pg" "$walg"
    else
      log "WARNING: could not install WAL-G $WALG_VERSION from the Go module proxy (see $WALSTORE_CACHE/walg-install.log); WAL-G tests will be reported as skipped. Set WALG_BIN to a wal-g $WALG_VERSION binary to run them."
    fi
    rm -rf "$gobin"
  else
    log "WARNING: Go is not installed; WAL-G tests will be reported as skipped"
  fi
fi
