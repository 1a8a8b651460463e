#!/usr/bin/env bash
# Installs what the client test suites need, idempotently:
# PostgreSQL and pgBackRest from Debian, boto3 + AWS CLI + pytest in a
# virtualenv (current releases, refreshed daily), and WAL-G $WALG_VERSION.
# CI=true (set by .ci/run) turns a dependency that cannot be installed into a failure.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apt_install postgresql postgresql-contrib pgbackrest daemontools python3-venv gnupg

if [ ! -x "$WALSTORE_VENV/bin/python" ]; then
  log "creating the Python virtualenv $WALSTORE_VENV"
  python3 -m venv "$WALSTORE_VENV"
fi
stamp="$WALSTORE_VENV/.installed"
# awscrt: botocore needs it to compute CRC32C and CRC64NVME (without it those
# boto3 checksum tests are skipped with MissingDependencyException as the reason).
# s3cmd: a Signature Version 2 client (tests/test_s3_semantics.py).
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ] \
   || ! "$WALSTORE_VENV/bin/python" -c "import awscrt" 2>/dev/null || [ ! -x "$WALSTORE_VENV/bin/s3cmd" ]; then
  log "installing boto3, awscli, awscrt, s3cmd, pytest (current releases)"
  "$WALSTORE_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$WALSTORE_VENV/bin/pip" install -q --upgrade boto3 awscli awscrt s3cmd pytest >/dev/null
  touch "$stamp"
fi

# WAL-G $WALG_VERSION: see ensure_walg in common.sh for where it comes from. In CI
# (CI=true) a missing WAL-G fails here, in one line; elsewhere its tests are skipped and
# the reason is printed at the end of the pytest run.
apt_install xz-utils
if ! ensure_walg; then
  if [ "${CI:-}" = true ]; then
    echo "FAILED: $WALG_MISSING" >&2
    exit 1
  fi
  log "WARNING: $WALG_MISSING; WAL-G tests will be skipped"
fi

# MinIO (pinned as the benchmarks build it): the replication target of test_replication.py.
if ! ensure_minio; then
  if [ "${CI:-}" = true ]; then
    echo "FAILED: $MINIO_MISSING" >&2
    exit 1
  fi
  log "WARNING: $MINIO_MISSING; replication tests against MinIO will be skipped"
fi

# Deployment validators for tests/test_deploy.py (pinned; each skipped with a
# reason by the tests if it cannot be installed): helm, promtool and kustomize
# built with `go install` from the Go module proxy, crdcheck and
# dockerfilecheck built from deploy/tools, kubernetes-validate (bundled
# Kubernetes JSON schemas) from PyPI, systemd-analyze and strace from Debian.
export HELM_VERSION="v3.22.0"
export PROMETHEUS_MODULE_VERSION="v0.316.0"   # Prometheus 3.16.0's promtool
export KUSTOMIZE_VERSION="v5.8.2"
apt_install systemd strace
"$WALSTORE_VENV/bin/python" -c "import kubernetes_validate" 2>/dev/null \
  || "$WALSTORE_VENV/bin/pip" install -q kubernetes-validate >/dev/null
go_install_pinned() {  # BINARY PACKAGE VERSION: $WALSTORE_BIN_DIR/BINARY, reused while its version matches
  local name=$1 pkg=$2 version=$3 bin="$WALSTORE_BIN_DIR/$1" gobin
  if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | awk '$1 == "mod" {print $3}' | grep -qx "$version"; then
    return 0
  fi
  log "installing $name $version with go install (once; cached in $WALSTORE_BIN_DIR)"
  gobin="$(mktemp -d)"
  if GOBIN="$gobin" GOTOOLCHAIN=local go install "$pkg@$version" >"$WALSTORE_CACHE/$name-install.log" 2>&1; then
    install -m 0755 "$gobin/$name" "$bin"
  else
    log "WARNING: could not install $name $version (see $WALSTORE_CACHE/$name-install.log); its deploy checks will be skipped"
  fi
  rm -rf "$gobin"
}
if command -v go >/dev/null; then
  go_install_pinned helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
  go_install_pinned promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_MODULE_VERSION"
  go_install_pinned kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
  # crdcheck and dockerfilecheck: rebuilt when a source under deploy/tools changes.
  tools_src="$REPO_ROOT/deploy/tools"
  if [ ! -x "$WALSTORE_BIN_DIR/crdcheck" ] || [ ! -x "$WALSTORE_BIN_DIR/dockerfilecheck" ] \
     || [ -n "$(find "$tools_src" -type f -newer "$WALSTORE_BIN_DIR/crdcheck")" ]; then
    log "building crdcheck and dockerfilecheck (deploy/tools)"
    (cd "$tools_src" && GOTOOLCHAIN=local go build -o "$WALSTORE_BIN_DIR/" ./crdcheck ./dockerfilecheck) \
      >"$WALSTORE_CACHE/deploy-tools-build.log" 2>&1 \
      || log "WARNING: could not build deploy/tools (see $WALSTORE_CACHE/deploy-tools-build.log); CRD and Dockerfile checks will be skipped"
  fi
else
  log "WARNING: Go is not installed; helm, promtool, kustomize, CRD and Dockerfile checks will be skipped"
fi
