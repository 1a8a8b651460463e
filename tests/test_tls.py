"""walstore's native TLS: clients verify it against the test CA, and it reloads its certificate.

A certificate renewed on disk (cert-manager, certbot) must reach new
connections without a restart, because a restart drops every archive_command
and backup in flight. walstore re-reads `--tls-cert`/`--tls-key` on SIGHUP and
when their modification time changes (polled every 10 s); a reload that fails
(a half-written or broken file) must keep the previous certificate and keep
serving, not take the archive down.

What a client is served is observed on the wire: a new connection's peer
certificate (its DER SHA-256 and serial), verified by Python's `ssl` against
the test CA. Certificates come from tlscerts.py: one CA, a new key pair and
serial per certificate.
"""
from __future__ import annotations

import hashlib
import http.client
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError

from harness import Walstore, wait_for
from tlscerts import TestCA, issue_server_cert, make_ca, pem_fingerprint

BROKEN_PEM = "-----BEGIN CERTIFICATE-----\nthis is not base64 (a botched renewal)\n-----END CERTIFICATE-----\n"


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return make_ca(tmp_path / "ca")


def served(server: Walstore) -> tuple[str, int]:
    """(SHA-256 of the DER certificate, serial) a new TLS connection is served, verified with the test CA."""
    ctx = server.ssl_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            serial = int(tls.getpeercert()["serialNumber"], 16)
    return hashlib.sha256(der).hexdigest(), serial


def file_identity(cert: Path) -> tuple[str, int]:
    """(fingerprint, serial) of a PEM certificate file, as `served` reports them."""
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert)], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return pem_fingerprint(cert), int(out.strip().split("=", 1)[1], 16)


def install(src_crt: Path, src_key: Path, crt: Path, key: Path) -> None:
    """Overwrites the served files in place (what a renewal that rewrites the files does)."""
    key.write_bytes(src_key.read_bytes())
    crt.write_bytes(src_crt.read_bytes())


def log_text(server: Walstore) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text(errors="replace"))


def handles_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (`SigCgt` in /proc/PID/status).

    walstore installs it in a task spawned after the "listening" line, and
    SIGHUP's default action ends the process: a SIGHUP in that window kills the
    server. The tests wait for the handler so they test the reload, not that race.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def tls_walstore(tmp_path: Path, ca: TestCA, crt: Path, key: Path) -> Walstore:
    s = Walstore(data_dir=tmp_path / "data", buckets=["test"], tls_cert=crt, tls_key=key, ca=ca.crt).start()
    wait_for(lambda: handles_sighup(s.proc.pid), timeout=10, interval=0.05, what="walstore's SIGHUP handler")
    return s


def stop_cleanly(s: Walstore) -> None:
    code = s.stop()
    assert code == 0, f"walstore exited with {code}; log {s.log_path}"


def test_clients_must_trust_the_test_ca(tls_server):
    """The https endpoint works for a client that trusts the test CA, and only for such a client.

    So the client suites' `verify=`/`--ca-bundle` settings are what makes them
    work: nothing else (a system trust store, plain http) would reach the server.
    """
    s3 = boto3.client("s3", **tls_server.boto3_kwargs())
    s3.put_object(Bucket="test", Key="k", Body=b"over https")
    assert s3.get_object(Bucket="test", Key="k")["Body"].read() == b"over https"
    assert tls_server.get("/health/ready") == (200, b"ok\n")

    # botocore's default trust store does not know the test CA.
    kw = {**tls_server.boto3_kwargs(), "verify": True, "config": Config(retries={"max_attempts": 1})}
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        boto3.client("s3", **kw).list_buckets()
    # Plain http to the https port gets no HTTP answer.
    conn = http.client.HTTPConnection("127.0.0.1", tls_server.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health/live")
            conn.getresponse().read()
    finally:
        conn.close()
    assert tls_server.proc.poll() is None


def test_sighup_reloads_certificate_and_survives_a_broken_one(tmp_path, ca):
    """SIGHUP: new connections get the new certificate; a broken file keeps the previous one."""
    tls = tmp_path / "tls"
    crt_a, key_a = issue_server_cert(ca, tls, "a")
    crt_b, key_b = issue_server_cert(ca, tls, "b")
    crt, key = tls / "served.crt", tls / "served.key"
    install(crt_a, key_a, crt, key)
    a, b = file_identity(crt_a), file_identity(crt_b)
    assert a[0] != b[0] and a[1] != b[1]

    s = tls_walstore(tmp_path, ca, crt, key)
    try:
        assert served(s) == a
        # A keep-alive connection opened under A (requests on it must not break).
        kept = http.client.HTTPSConnection("127.0.0.1", s.port, timeout=10, context=s.ssl_context())
        kept.request("GET", "/health/live")
        assert kept.getresponse().read() == b"ok\n"

        install(crt_b, key_b, crt, key)
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served(s) == b, timeout=10, interval=0.1, what="a new connection to be served certificate B")
        assert s.proc.poll() is None
        kept.request("GET", "/health/live")
        assert kept.getresponse().read() == b"ok\n", "the reload broke a connection opened before it"
        kept.close()
        s3 = boto3.client("s3", **s.boto3_kwargs())
        s3.put_object(Bucket="test", Key="after-reload", Body=b"b")

        # A broken certificate file: the reload fails (logged), B stays.
        failures = log_text(s).count("TLS reload failed")
        crt.write_text(BROKEN_PEM)
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_text(s).count("TLS reload failed") > failures, timeout=10, interval=0.1,
                 what="walstore to log the failed reload")
        assert s.proc.poll() is None, "walstore exited after a failed reload"
        assert served(s) == b, "after a failed reload walstore no longer serves certificate B"
        assert s3.get_object(Bucket="test", Key="after-reload")["Body"].read() == b"b"
        assert s.get("/health/ready") == (200, b"ok\n")
    finally:
        stop_cleanly(s)


def test_rewritten_files_are_reloaded_without_a_signal(tmp_path, ca):
    """A renewal that only rewrites the files reaches new connections within the 10 s poll (bounded at 30 s)."""
    tls = tmp_path / "tls"
    crt_a, key_a = issue_server_cert(ca, tls, "a")
    crt_c, key_c = issue_server_cert(ca, tls, "c")
    crt, key = tls / "served.crt", tls / "served.key"
    install(crt_a, key_a, crt, key)
    s = tls_walstore(tmp_path, ca, crt, key)
    try:
        assert served(s) == file_identity(crt_a)
        c = file_identity(crt_c)
        install(crt_c, key_c, crt, key)
        started = time.monotonic()
        wait_for(lambda: served(s) == c, timeout=30, interval=0.5, what="the polled reload of certificate C")
        print(f"new certificate served after {time.monotonic() - started:.1f} s")
        assert "TLS certificate reloaded" in log_text(s)
    finally:
        stop_cleanly(s)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_sighup_right_after_start_is_harmless(tmp_path, ca, tls):
    """SIGHUP's default action ends a process: the handler must exist before the
    server says it listens, with or without TLS (a `kill -HUP` to every process
    or a config-reloader sidecar must never stop the store)."""
    kw = {}
    if tls:
        crt, key = issue_server_cert(ca, tmp_path / "cert")
        kw = {"tls_cert": crt, "tls_key": key, "ca": ca.crt}
    for i in range(5):
        s = Walstore(data_dir=tmp_path / f"data{i}", buckets=["test"], **kw).start()
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert s.proc.poll() is None, f"walstore died on SIGHUP; log {s.log_path}"
        status, _ = s.get("/health/live")
        assert status == 200
        assert s.stop() == 0
