"""The admin CLI end to end: every command against a running server over https
(verified with `--ca-cert`), then against the stopped server's data directory.

An operator runs these from a shell or a script, so what matters is the exit
status, a one-line error on stderr, a readable table by default and the same
facts with `--json`.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from harness import Walstore, walstore_exe
from tlscerts import make_ca, make_ca_and_cert


def run(server: Walstore | None, *args: str, ca: Path | None = None, online: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [walstore_exe(), *args]
    e = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    if server is not None and online:
        cmd += ["--endpoint", server.endpoint]
        e["WALSTORE_ROOT_ACCESS_KEY"] = server.access_key
        e["WALSTORE_ROOT_SECRET_KEY"] = server.secret_key
    if ca is not None:
        cmd += ["--ca-cert", str(ca)]
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=e)


def ok_json(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("walstore: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def https_server(tmp_path):
    ca, cert, key = make_ca_and_cert(tmp_path / "tls")
    s = Walstore(data_dir=tmp_path / "data", buckets=["pgb"], tls_cert=cert, tls_key=key, ca=ca).start()
    yield s
    assert s.stop() == 0


def test_every_command_over_https_then_offline(https_server: Walstore, tmp_path):
    s = https_server
    ca = s.ca
    # https needs the CA; a different CA fails the handshake; both are one-line errors.
    one_line_error(run(s, "bucket", "list"), "--ca-cert")
    other = make_ca(tmp_path / "other")
    one_line_error(run(s, "bucket", "list", ca=other.crt))
    one_line_error(run(s, "bucket", "list", ca=tmp_path / "missing.pem"), "missing.pem")

    # Buckets.
    assert "made" not in run(s, "bucket", "create", "cli-made", ca=ca).stderr
    names = [b["name"] for b in ok_json(run(s, "bucket", "list", "--json", ca=ca))["buckets"]]
    assert names == ["cli-made", "pgb"], names
    table = run(s, "bucket", "list", ca=ca)
    assert table.returncode == 0 and "cli-made" in table.stdout and "{" not in table.stdout, table.stdout
    one_line_error(run(s, "bucket", "create", "Bad_Name", ca=ca))
    assert run(s, "bucket", "delete", "cli-made", ca=ca).returncode == 0

    # Keys: the new key works through S3, is listed without its secret, and stops working when revoked.
    k = ok_json(run(s, "key", "create", "--role", "reader", "--scope", "pgb", "--description", "cli test",
                    "--json", ca=ca))
    listed = ok_json(run(s, "key", "list", "--json", ca=ca))["keys"]
    assert any(x["id"] == k["id"] and x["role"] == "reader" for x in listed)
    assert k["secret"] not in json.dumps(listed)
    reader = boto3.client("s3", endpoint_url=s.endpoint, region_name=s.region, verify=str(ca),
                          aws_access_key_id=k["id"], aws_secret_access_key=k["secret"])
    reader.list_objects_v2(Bucket="pgb")
    one_line_error(run(s, "key", "create", "--role", "superuser", ca=ca), "superuser")
    assert run(s, "key", "revoke", k["id"], ca=ca).returncode == 0
    with pytest.raises(Exception):
        reader.list_objects_v2(Bucket="pgb")

    # A little repository so status, plan and policy have something to say.
    root = boto3.client("s3", **s.boto3_kwargs())
    for n in range(1, 4):
        root.put_object(Bucket="pgb", Key=f"spilo/c1/wal_005/0000000100000000000000{n:02X}.lz4", Body=b"x" * 64)
    st = ok_json(run(s, "status", "pgb", "--json", ca=ca))
    assert st["repositories"][0]["prefix"] == "spilo/c1/", st
    text = run(s, "status", "pgb", ca=ca)
    assert text.returncode == 0 and "spilo/c1/" in text.stdout
    pol = ok_json(run(s, "policy", "set", "pgb/spilo/c1", "--recovery-window", "3d", "--gc-delay", "2h", "--json",
                      ca=ca))
    assert pol["policy"]["recovery_window"] == "3d" and pol["policy"]["gc_delay"] == "2h", pol
    one_line_error(run(s, "policy", "set", "pgb", "--recovery-window", "soon", ca=ca), "recovery_window")
    shown = ok_json(run(s, "policy", "show", "pgb", "--json", ca=ca))
    assert any(p["prefix"] == "spilo/c1/" for p in shown["policies"]), shown
    plan = ok_json(run(s, "retention", "plan", "pgb", "--json", ca=ca))
    assert plan["plans"][0]["units"] == [], "everything is younger than a day"
    assert ok_json(run(s, "retention", "run", "pgb", "--json", ca=ca))["runs"][0]["deleted_objects"] == 0
    assert ok_json(run(s, "quarantine", "list", "--json", ca=ca))["quarantined"] == []
    assert "quarantine is empty" in run(s, "quarantine", "list", ca=ca).stdout
    audit = ok_json(run(s, "audit", "--json", ca=ca))["records"]
    assert any(r["action"] == "policy-set" for r in audit), audit

    # Maintenance online.
    assert ok_json(run(s, "gc", "--json", ca=ca))["reclaimed_blobs"] >= 0
    check = run(s, "check", ca=ca)
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr
    scrub = ok_json(run(s, "scrub", "--json", ca=ca))
    assert scrub["corrupt"] == [] and scrub["blobs"] >= 1, scrub

    # Offline: the data directory of a running server is refused, of a stopped one works.
    one_line_error(run(None, "check", "--data-dir", str(s.data_dir), online=False), "in use")
    assert s.stop() == 0
    check = run(None, "check", "--data-dir", str(s.data_dir), online=False)
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr
    gc = ok_json(run(None, "gc", "--data-dir", str(s.data_dir), "--grace", "0s", "--json", online=False))
    assert gc["reclaimed_blobs"] >= 0
    names = [b["name"] for b in ok_json(run(None, "bucket", "list", "--data-dir", str(s.data_dir), "--json",
                                           online=False))["buckets"]]
    assert names == ["pgb"]
    one_line_error(run(None, "check", "--data-dir", str(tmp_path / "nothing"), online=False),
                   "not a walstore data directory")
    s.start()


def test_credentials_come_from_the_data_dir(tmp_path):
    """Without keys in the environment the CLI reads the root credentials the
    server generated in $WALSTORE_DATA_DIR (not only ./walstore-data)."""
    data = tmp_path / "data"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WALSTORE_", "AWS_"))}
    proc = subprocess.Popen([walstore_exe(), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                             "--bucket", "pgb"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean,
                            text=True)
    endpoint = ""
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the server prints the line once it listens, or exits
        if "listening on " in line:
            endpoint = line.split("listening on ", 1)[1].strip()
            break
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    try:
        assert (data / "root-credentials").exists()
        p = subprocess.run([walstore_exe(), "bucket", "list", "--endpoint", endpoint, "--json"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={**clean, "WALSTORE_DATA_DIR": str(data)})
        assert [b["name"] for b in ok_json(p)["buckets"]] == ["pgb"]
        p = subprocess.run([walstore_exe(), "bucket", "list", "--endpoint", endpoint], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, env=clean)
        one_line_error(p, "no admin credentials")
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
