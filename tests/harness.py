"""Starts and stops walstore servers for the client test suites.

Every server listens on 127.0.0.1 with an ephemeral port (``--listen
127.0.0.1:0``; the port and scheme are read from the "listening on" line it
prints) and keeps its data in a temporary directory. With `tls_cert`/`tls_key`
it serves https (``--tls-cert``/``--tls-key``); `ca` is then the CA file
clients verify it with (see tlscerts.py). Nothing here contacts a non-loopback
address.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Prefix of every skip reason that means "a real component this test needs is not installed".
#: Under ``CI=true`` conftest.py turns such skips into failures (a CI run must exercise every
#: client); other skips (a documented upstream bug, an optional capability) stay skips.
MISSING_DEPENDENCY = "missing dependency: "


def missing_dependency(what: str) -> str:
    """The skip reason for a test that cannot run because `what` is not installed."""
    return MISSING_DEPENDENCY + what


def in_ci() -> bool:
    """True when the suite runs as CI (``CI=true``, which .ci/run sets)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def walstore_exe() -> str:
    exe = os.environ.get("WALSTORE_EXE")
    if exe and Path(exe).is_file():
        return exe
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/walstore/target"))
    for profile in ("release", "debug"):
        p = target / profile / "walstore"
        if p.is_file():
            return str(p)
    raise RuntimeError("walstore binary not found: run scripts/test.sh or set WALSTORE_EXE")


def walg_exe() -> str | None:
    """The pinned WAL-G binary, or None when it could not be installed."""
    exe = os.environ.get("WALG_EXE") or str(Path.home() / ".cache/walstore/bin/wal-g")
    return exe if Path(exe).is_file() and os.access(exe, os.X_OK) else None


def walg_missing() -> str:
    """The skip reason when WAL-G is missing: what scripts/common.sh's ensure_walg found."""
    why = os.environ.get("WALG_MISSING") or (
        "WAL-G v3.0.9 is not installed: set WALG_BIN to a wal-g v3.0.9 binary or put "
        "shared/tools/wal-g-v3.0.9-linux-amd64.xz beside the checkout, then run scripts/install-test-deps.sh")
    return missing_dependency(why)


@dataclass
class Walstore:
    """A running walstore process."""

    data_dir: Path
    region: str = "de01"
    buckets: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(9).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    proc: subprocess.Popen | None = None
    port: int = 0
    log_path: Path | None = None
    #: Serve https with this certificate chain and key (PEM); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The CA certificate clients verify `tls_cert` with.
    ca: Path | None = None
    #: Listen on this port instead of an ephemeral one (a restart that must keep its address).
    listen_port: int = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """For https: a client context that trusts exactly `ca` (hostname checked)."""
        if self.scheme == "http":
            return None
        assert self.ca, "an https Walstore needs `ca` for its clients"
        return ssl.create_default_context(cafile=str(self.ca))

    def boto3_kwargs(self) -> dict:
        """endpoint_url, region, credentials and (https) verify= for boto3.client("s3", ...)."""
        kw = {"endpoint_url": self.endpoint, "region_name": self.region, "aws_access_key_id": self.access_key,
              "aws_secret_access_key": self.secret_key}
        if self.scheme == "https":
            assert self.ca, "an https Walstore needs `ca` for its clients"
            kw["verify"] = str(self.ca)
        return kw

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """An unsigned GET (probes, /metrics): (status, body); verifies the certificate over https."""
        req = urllib.request.Request(self.endpoint + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def start(self, timeout: float = 30.0) -> "Walstore":
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        assert (self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key: both or neither"
        tls = ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)] if self.tls_cert else []
        args = [walstore_exe(), "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.listen_port}",
                "--region", self.region, *[a for b in self.buckets for a in ("--bucket", b)], *tls,
                *self.extra_args]
        env = dict(os.environ, WALSTORE_ROOT_ACCESS_KEY=self.access_key, WALSTORE_ROOT_SECRET_KEY=self.secret_key,
                   WALSTORE_LOG_LEVEL=os.environ.get("WALSTORE_TEST_LOG_LEVEL", "info"))
        for var in ("WALSTORE_TLS_CERT", "WALSTORE_TLS_KEY"):  # the scheme is this object's choice
            env.pop(var, None)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=env)
        port_box: list[tuple[str, int]] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                log.write(raw)
                log.flush()
                m = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", line)
                if m:
                    port_box.append((m.group(1), int(m.group(2))))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"walstore did not start; log: {self.log_path.read_text()[-4000:]}")
        scheme, self.port = port_box[0]
        if scheme != self.scheme:
            self.stop()
            raise RuntimeError(f"walstore listens on {scheme}, expected {self.scheme}; log: {self.log_path}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def admin(self, *args: str, check: bool = True) -> dict:
        """Runs `walstore ARGS --json` against this server (admin key); the parsed JSON output.
        With check=False a failure returns {"error": stderr, "code": exit status}."""
        env = dict(os.environ, WALSTORE_ENDPOINT=self.endpoint, WALSTORE_ROOT_ACCESS_KEY=self.access_key,
                   WALSTORE_ROOT_SECRET_KEY=self.secret_key)
        if self.ca:
            env["WALSTORE_CA_CERT"] = str(self.ca)
        cp = subprocess.run([walstore_exe(), *args, "--json"], capture_output=True, text=True, env=env, timeout=120)
        if cp.returncode != 0:
            if check:
                raise AssertionError(f"walstore {' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()}")
            return {"error": cp.stderr.strip(), "code": cp.returncode}
        return __import__("json").loads(cp.stdout) if cp.stdout.strip() else {}

    def env(self) -> dict[str, str]:
        """AWS_* variables for clients pointed at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            **({"AWS_CA_BUNDLE": str(self.ca)} if self.scheme == "https" and self.ca else {}),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # Clients must not find credentials or config of the machine's user.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def free_port() -> int:
    """A loopback port free now (for a server that must come back on the same address)."""
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def minio_exe() -> str | None:
    """The pinned MinIO build (scripts/common.sh ensure_minio), or None."""
    exe = os.environ.get("MINIO_EXE")
    if not exe:
        found = sorted((Path.home() / ".cache/walstore/peers").glob("minio-*/minio"))
        exe = str(found[-1]) if found else ""
    return exe if exe and Path(exe).is_file() and os.access(exe, os.X_OK) else None


def minio_missing() -> str:
    return missing_dependency(os.environ.get("MINIO_MISSING") or
                              "MinIO (pinned in scripts/common.sh) is not installed: run scripts/install-test-deps.sh")


@dataclass
class Minio:
    """A MinIO server on loopback (the pinned build), single drive, in `data_dir`. It keeps its
    port across stop()/start(), so a test can take a replication target down and bring it back."""

    data_dir: Path
    access_key: str = "minio-test-root"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    console_port: int = field(default_factory=free_port)
    region: str = "us-east-1"
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def boto3_kwargs(self) -> dict:
        return {"endpoint_url": self.endpoint, "region_name": self.region, "aws_access_key_id": self.access_key,
                "aws_secret_access_key": self.secret_key}

    def credentials_file(self, path: Path) -> Path:
        """Writes this server's root key as a walstore replication credentials file."""
        path.write_text(f"access_key_id = {self.access_key}\nsecret_access_key = {self.secret_key}\n")
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 60.0) -> "Minio":
        exe = minio_exe()
        assert exe, minio_missing()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        env = dict(os.environ, MINIO_ROOT_USER=self.access_key, MINIO_ROOT_PASSWORD=self.secret_key,
                   MINIO_BROWSER="off", MINIO_UPDATE="off", MINIO_CI_CD="1")
        self.proc = subprocess.Popen(
            [exe, "server", str(self.data_dir), "--address", f"127.0.0.1:{self.port}",
             "--console-address", f"127.0.0.1:{self.console_port}", "--quiet"],
            stdout=log, stderr=log, env=env)

        def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"MinIO exited with {self.proc.returncode}; log: {log.name}")
            try:
                with urllib.request.urlopen(self.endpoint + "/minio/health/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, timeout=timeout, interval=0.2, what="MinIO to be ready")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def new_server(tmp: Path, **kw) -> Walstore:
    return Walstore(data_dir=tmp / "data", **kw).start()


def wait_for(pred, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
