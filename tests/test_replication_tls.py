"""Replication to an https target whose certificate comes from a private CA (`--ca-cert`).

The target is a second walstore serving https with a certificate issued by a CA this
test makes (tlscerts.py). With `--ca-cert` the copy arrives; without it the system roots
do not know the CA, and the target fails as `network` (the TLS handshake) while local
writes go on. Only loopback addresses are contacted.
"""
from __future__ import annotations

import hashlib

import boto3
import pytest

from harness import Walstore, rmtree, tempdir, wait_for
from tlscerts import make_ca_and_cert

PREFIX = "site-b/"


@pytest.fixture(scope="module")
def servers():
    tmp = tempdir("walstore-repl-tls-")
    ca, cert, key = make_ca_and_cert(tmp)
    target = Walstore(data_dir=tmp / "target", buckets=["copies"], tls_cert=cert, tls_key=key, ca=ca).start()
    front = Walstore(data_dir=tmp / "front", buckets=["pgb"]).start()
    creds = tmp / "target.creds"
    creds.write_text(f"access_key_id = {target.access_key}\nsecret_access_key = {target.secret_key}\n")
    try:
        yield front, target, ca, creds
    finally:
        front.stop()
        target.stop()
        rmtree(tmp)


def add(front: Walstore, target: Walstore, name: str, creds, ca=None) -> dict:
    args = ["replication", "add", name, "--endpoint", target.endpoint, "--bucket", "copies", "--prefix",
            PREFIX + name + "/", "--region", target.region, "--credentials-file", str(creds), "--deletes", "mirror"]
    if ca:
        args += ["--ca-cert", str(ca)]
    return front.admin(*args)


def test_private_ca_is_trusted_only_when_given(servers):
    front, target, ca, creds = servers
    s3 = boto3.client("s3", **front.boto3_kwargs())
    body = b"segment bytes " * 1000
    s3.put_object(Bucket="pgb", Key="db/wal_005/000000010000000000000001.br", Body=body)

    trusted = add(front, target, "trusted", creds, ca)
    assert trusted["probe"] == "ok", trusted
    untrusted = add(front, target, "untrusted", creds)
    assert untrusted["probe"].startswith("network:"), untrusted

    def settled(name: str) -> dict | None:
        st = front.admin("replication", "status", name)
        return st if st["backlog_objects"] == 0 and st["state"] == "ok" else None

    wait_for(lambda: settled("trusted"), timeout=30, what="the copy through the private CA")
    copy = boto3.client("s3", **target.boto3_kwargs())
    got = copy.get_object(Bucket="copies", Key=PREFIX + "trusted/pgb/db/wal_005/000000010000000000000001.br")
    assert got["Body"].read() == body
    assert got["Metadata"]["walstore-sha256"] == hashlib.sha256(body).hexdigest()

    def failing() -> dict | None:
        st = front.admin("replication", "status", "untrusted")
        return st if st["state"] == "failing" and st["last_error"] else None

    st = wait_for(failing, timeout=30, what="the untrusted target to fail")
    assert st["last_error"]["kind"] == "network", st
    assert st["backlog_objects"] == 1, st
    # Local writes are not held up by a failing target.
    s3.put_object(Bucket="pgb", Key="db/wal_005/000000010000000000000002.br", Body=b"next")
    assert copy.list_objects_v2(Bucket="copies", Prefix=PREFIX + "untrusted/").get("KeyCount", 0) == 0
