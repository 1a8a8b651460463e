#!/usr/bin/env bash
# Builds walstore and starts it with its embedded defaults:
#   data dir ./walstore-data, listen 0.0.0.0:9000, region us-east-1,
#   root credentials generated on first start (printed, and kept in
#   ./walstore-data/root-credentials with mode 0600).
# Any argument is passed to `walstore serve`, e.g. --bucket backups --region de01.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
build_walstore
exec "$WALSTORE_EXE" serve "$@"
