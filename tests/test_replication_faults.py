"""Replication (off-box copy) under faults, with MinIO (and walstore) as the target.

A front walstore takes WAL-G-shaped objects from boto3 (``db/wal_005/…``, a base
backup's ``tar_partitions/part_N.tar`` and its ``_backup_stop_sentinel.json``) and
copies them with ``walstore replication add`` to a target:

1. target down, then back: MinIO stopped for ``WALSTORE_REPL_OUTAGE_S`` seconds
   (default 20; the issue asks for 60 s of downtime, CI runs the short mode) while
   writes (one > 16 MiB: multipart) and a delete go on: every front PUT succeeds
   at once; status "failing"/"network" with a backlog, the failing gauge at 1, at
   most 3 "replication failing" lines; MinIO back on the same port: the backlog
   drains, "replication recovered" is logged and the copy equals the front (keys,
   sizes, SHA-256 of every object).
2. a target that throttles: a fault proxy answers the first requests 503 SlowDown;
   errors{throttled} is counted, then the copy completes, identical.
3. wrong credentials: "failing"/"auth", the auth error counter, the server keeps
   serving S3 without restarting and without log spam; fixing the credentials file
   is enough (the worker reads it again after an auth error); pause/resume work.
4. rebuild refuses an object changed on the target behind walstore's back (its
   metadata copied, so only the bytes tell), leaves a foreign object alone, and
   restores the rest with the original ETag, LastModified, content type, metadata.
5. a second walstore as the target: deletes "delay 7d" (the default) are held,
   "never" are dropped, "mirror" propagate.
6. kill -9 of the front while replication is in flight, ``WALSTORE_REPL_CRASH_CYCLES``
   times (default 10): afterwards the copy holds exactly the acknowledged state.

Only loopback addresses are used. Run:
``CI=true WALSTORE_EXE=… python -m pytest -q tests/test_replication_faults.py``
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import Minio, Walstore, free_port, minio_exe, minio_missing, wait_for, walstore_exe

KiB = 1 << 10
MiB = 1 << 20
BUCKET = "pgb"  # the front's bucket, holding the WAL-G repository `db/`
#: Length of the outage in test 1. The issue asks for 60 s; CI uses this short mode.
OUTAGE_S = float(os.environ.get("WALSTORE_REPL_OUTAGE_S", "20"))
CRASH_CYCLES = int(os.environ.get("WALSTORE_REPL_CRASH_CYCLES", "10"))
#: Delete protection off and the split-brain guard off: these tests overwrite and
#: delete WAL segments of a repository without backups on purpose (the replication
#: journal is what is under test, not the retention policy).
PERMISSIVE = ["--delete-protection", "allow", "--split-brain-guard", "false"]


# -- objects shaped like a WAL-G repository ----------------------------------------------


def segment(n: int) -> str:
    return f"00000001{n // 256:08X}{n % 256:08X}"


def wal_key(n: int) -> str:
    return f"db/wal_005/{segment(n)}.br"


def part_key(n: int, part: int = 1) -> str:
    return f"db/basebackups_005/base_{segment(n)}/tar_partitions/part_{part}.tar"


def sentinel_key(n: int) -> str:
    return f"db/basebackups_005/base_{segment(n)}_backup_stop_sentinel.json"


def sentinel_body(n: int) -> bytes:
    lsn = n * 16 * MiB + 40
    return json.dumps({"LSN": lsn, "FinishLSN": lsn + 248, "PgVersion": 150002, "IsPermanent": False,
                       "StartTime": "2025-01-02T03:04:05.123456Z", "FinishTime": "2025-01-02T03:05:06.654321Z",
                       "Hostname": "db1", "DataDir": "/pg", "UncompressedSize": 31981712,
                       "CompressedSize": 4262375, "Version": 2}).encode()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# -- clients and inspection ---------------------------------------------------------------


def client(kw: dict, attempts: int | None = None, timeout: float = 30):
    retries = {"mode": "standard", "total_max_attempts": attempts} if attempts else {"mode": "standard"}
    cfg = Config(retries=retries, connect_timeout=min(timeout, 5), read_timeout=timeout,
                 s3={"addressing_style": "path"})
    return boto3.client("s3", config=cfg, **kw)


def listing(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    """{key without `prefix`: size} of every object under `prefix`, all pages."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = o["Size"]
    return out


def digest_of(s3, bucket: str, key: str) -> str | None:
    try:
        return sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def assert_copy_equals_front(front_s3, target_s3, target_bucket: str, prefix: str) -> int:
    """The target holds exactly the front's bucket under `prefix` + BUCKET/: keys, sizes, SHA-256."""
    want = listing(front_s3, BUCKET)
    got = listing(target_s3, target_bucket, f"{prefix}{BUCKET}/")
    assert got == want, (f"target listing differs: missing {sorted(set(want) - set(got))}, "
                         f"extra {sorted(set(got) - set(want))}, "
                         f"size differs {sorted(k for k in want if k in got and got[k] != want[k])}")
    for k in want:
        a, b = digest_of(front_s3, BUCKET, k), digest_of(target_s3, target_bucket, f"{prefix}{BUCKET}/{k}")
        assert a == b, f"{k}: the copy's bytes differ from the front's ({b} != {a})"
    return len(want)


def status(ws: Walstore, name: str) -> dict:
    return ws.admin("replication", "status", name)


def wait_status(ws: Walstore, name: str, pred, timeout: float, what: str) -> dict:
    """Polls `replication status NAME` until pred(status); on timeout the last status is in the error."""
    last: dict = {}

    def check():
        nonlocal last
        last = status(ws, name)
        return pred(last)

    try:
        wait_for(check, timeout=timeout, interval=0.5, what=what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last status: {json.dumps(last, indent=1)}") from None
    return last


def drained(st: dict) -> bool:
    return st["state"] == "ok" and st["backlog_objects"] == 0


def metrics(ws: Walstore) -> list[tuple[str, dict[str, str], float]]:
    code, body = ws.get("/metrics")
    assert code == 200, body[:200]
    out = []
    for line in body.decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric(ws: Walstore, name: str, **labels: str) -> float | None:
    for n, ls, v in metrics(ws):
        if n == name and all(ls.get(k) == want for k, want in labels.items()):
            return v
    return None


def log_lines(ws: Walstore, needle: str) -> list[str]:
    assert ws.log_path
    return [ln for ln in ws.log_path.read_text(errors="replace").splitlines() if needle in ln]


def add_target(ws: Walstore, name: str, endpoint: str, bucket: str, creds: Path, prefix: str = "site-a/",
               deletes: str | None = None) -> dict:
    args = ["replication", "add", name, "--endpoint", endpoint, "--bucket", bucket, "--prefix", prefix,
            "--credentials-file", str(creds)]
    if deletes:
        args += ["--deletes", deletes]
    return ws.admin(*args)


def front_server(tmp: Path, name: str = "front", **kw) -> Walstore:
    kw.setdefault("extra_args", PERMISSIVE)
    return Walstore(data_dir=tmp / name, buckets=[BUCKET], **kw).start()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minio(tmp_path_factory):
    if minio_exe() is None:
        pytest.skip(minio_missing())
    m = Minio(tmp_path_factory.mktemp("minio") / "data").start()
    yield m
    m.stop()


@pytest.fixture
def mc(minio):
    """A boto3 client of MinIO (restarts MinIO if an earlier test left it stopped)."""
    if minio.proc is None:
        minio.start()
    return client(minio.boto3_kwargs())


@pytest.fixture
def front(tmp_path):
    ws = front_server(tmp_path)
    yield ws
    if ws.proc is not None:
        code = ws.stop()
        assert code == 0, f"walstore exited with {code}; log {ws.log_path}"


def put_repo(s3, first: int, count: int, size: int = 4 * KiB) -> dict[str, bytes]:
    """WAL segments first..first+count-1, then one backup (a part and its sentinel)."""
    objs = {wal_key(n): os.urandom(size) for n in range(first, first + count)}
    objs[part_key(first)] = os.urandom(3 * size)
    objs[sentinel_key(first)] = sentinel_body(first)
    for k, body in objs.items():
        s3.put_object(Bucket=BUCKET, Key=k, Body=body)
    return objs


# -- 1 -------------------------------------------------------------------------------------------


def test_target_down_then_back(minio, mc, front, tmp_path):
    name, tb, prefix = "outage", "t-outage", "site-a/"
    mc.create_bucket(Bucket=tb)
    s3 = client(front.boto3_kwargs(), attempts=1, timeout=10)
    before = put_repo(s3, 1, 5)
    add = add_target(front, name, minio.endpoint, tb, minio.credentials_file(tmp_path / "minio.creds"),
                     prefix=prefix, deletes="mirror")
    assert add["probe"] == "ok" and add["journaled"] == len(before), add
    wait_status(front, name, drained, 30, "the first objects to be copied")

    minio.stop()
    try:
        # Writes go on during the outage: ~30 objects spread over OUTAGE_S, one of them
        # > 16 MiB (multipart on the target later), and a delete of a copied object.
        n_writes, slowest, written = 30, 0.0, 0
        t_end = time.monotonic() + OUTAGE_S
        for i in range(n_writes):
            key = wal_key(100 + i) if i != 10 else part_key(100, 2)
            body = os.urandom(17 * MiB if i == 10 else 3 * KiB + i)
            t0 = time.monotonic()
            r = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            dt = time.monotonic() - t0
            assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
            slowest = max(slowest, dt if i != 10 else dt / 3)  # the 17 MiB one may take up to 6 s
            written += 1
            if i == 15:
                s3.delete_object(Bucket=BUCKET, Key=wal_key(2))
            time.sleep(max(0.0, (t_end - time.monotonic()) / (n_writes - i)))
        assert written == n_writes
        assert slowest < 2.0, f"a front PUT took {slowest:.2f}s while the target was down"

        st = wait_status(front, name, lambda s: s["state"] == "failing", 10, "state failing")
        assert st["last_error"] and st["last_error"]["kind"] == "network", st
        assert st["backlog_objects"] > 0 and st["errors"].get("network", 0) >= 1, st
        assert st["consecutive_failures"] >= 1 and st["lag_seconds"] > 0, st
        assert metric(front, "walstore_replication_failing", target=name) == 1
        assert metric(front, "walstore_replication_backlog_objects", target=name) == st["backlog_objects"]
        assert (metric(front, "walstore_replication_errors_total", target=name, kind="network") or 0) >= 1
        # The off-box RPO of the repository grows with the outage (newest segment written
        # minus newest segment on the target, which is still one from before it).
        rpo = metric(front, "walstore_replication_wal_offbox_lag_seconds", target=name, bucket=BUCKET, repo="db/")
        assert rpo is not None and rpo >= OUTAGE_S / 2, rpo
        assert [m["segment"] for m in st["offbox_wal"]] == [segment(5)], st["offbox_wal"]
        warns = log_lines(front, "replication failing")
        assert 1 <= len(warns) <= 3, f"{len(warns)} 'replication failing' lines in {OUTAGE_S}s:\n" + "\n".join(warns)
    finally:
        minio.start()  # same port

    st = wait_status(front, name, drained, 45, "the backlog to drain after the target came back")
    assert st["last_error"] is None and st["consecutive_failures"] == 0, st
    assert log_lines(front, "replication recovered"), "no 'replication recovered' line"
    assert metric(front, "walstore_replication_failing", target=name) == 0
    assert [m["segment"] for m in st["offbox_wal"]] == [segment(129)], st["offbox_wal"]
    assert metric(front, "walstore_replication_wal_offbox_lag_seconds", target=name, bucket=BUCKET, repo="db/") == 0
    assert len(log_lines(front, "replication failing")) <= 3
    n = assert_copy_equals_front(s3, mc, tb, prefix)
    assert n == len(before) + n_writes - 1
    # The big object went up as a multipart upload (2 parts of 16 MiB at most).
    head = mc.head_object(Bucket=tb, Key=f"{prefix}{BUCKET}/{part_key(100, 2)}")
    assert head["ContentLength"] == 17 * MiB and head["ETag"].strip('"').endswith("-2"), head


# -- 2 -------------------------------------------------------------------------------------------

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (a port on 127.0.0.1) that answers the
    first `fail_first` requests 503 SlowDown and forwards every other one verbatim: method, path,
    headers (Host and Authorization included, so a SigV4 signature made for the proxy's address
    verifies upstream: MinIO checks it against the Host header it receives) and body.
    (This works, so the fallback -- a walstore target with --max-connections 1 whose only
    connection is held open -- is not needed.)"""

    def __init__(self, upstream: int, fail_first: int) -> None:
        self.upstream, self.fail_first = upstream, fail_first
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_one(self) -> None:
                chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
                data = self.body()
                with proxy.lock:
                    fail = len(proxy.seen) < proxy.fail_first
                    proxy.seen.append((self.command, self.path, 503 if fail else 0))
                    idx = len(proxy.seen) - 1
                if fail:
                    self.send_response_only(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOWDOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOWDOWN)
                    return
                up = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                try:
                    up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in HOP and not (chunked and k.lower() == "content-length"):
                            up.putheader(k, v)
                    if chunked or data:
                        up.putheader("Content-Length", str(len(data)))
                    up.endheaders(data or None)
                    resp = up.getresponse()
                    payload = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    with proxy.lock:
                        proxy.seen[idx] = (self.command, self.path, resp.status)
                finally:
                    up.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_target_throttling_503(minio, mc, front, tmp_path):
    name, tb, prefix = "throttled", "t-throttle", "site-b/"
    mc.create_bucket(Bucket=tb)
    s3 = client(front.boto3_kwargs())
    objs = put_repo(s3, 1, 8)
    with FaultProxy(minio.port, fail_first=6) as proxy:
        add = add_target(front, name, proxy.endpoint, tb, minio.credentials_file(tmp_path / "minio.creds"),
                         prefix=prefix, deletes="mirror")
        # The probe of `add` is the first request: throttled too.
        assert add["probe"].startswith("throttled"), add
        more = put_repo(s3, 20, 4)
        st = wait_status(front, name, drained, 60, "the copy through a throttling target to complete")
        answered = [s for _, _, s in proxy.seen]
        assert answered[:6] == [503] * 6, proxy.seen
        assert all(s < 300 for s in answered[6:]), f"MinIO refused forwarded requests: {proxy.seen}"
    assert st["errors"].get("throttled", 0) >= 1, st
    assert set(st["errors"]) == {"throttled"}, st
    assert st["replicated_objects"] == len(objs) + len(more), st
    assert (metric(front, "walstore_replication_errors_total", target=name, kind="throttled") or 0) >= 1
    assert log_lines(front, "replication recovered")
    assert assert_copy_equals_front(s3, mc, tb, prefix) == len(objs) + len(more)


# -- 3 -------------------------------------------------------------------------------------------


def test_wrong_credentials(minio, mc, front, tmp_path):
    name, tb, prefix = "badkey", "t-auth", "site-c/"
    mc.create_bucket(Bucket=tb)
    s3 = client(front.boto3_kwargs())
    objs = put_repo(s3, 1, 4)
    creds = tmp_path / "minio.creds"
    creds.write_text(f"access_key_id = {minio.access_key}\nsecret_access_key = wrong-{minio.secret_key}\n")
    creds.chmod(0o600)
    pid = front.proc.pid
    add = add_target(front, name, minio.endpoint, tb, creds, prefix=prefix, deletes="mirror")
    assert add["probe"].startswith("auth"), add
    st = wait_status(front, name, lambda s: s["state"] == "failing", 10, "state failing")
    assert st["last_error"]["kind"] == "auth", st
    assert st["backlog_objects"] == len(objs), st

    # ~10 s of the server failing to copy: S3 keeps working, no restart, no log spam.
    t_end = time.monotonic() + 10
    i = 0
    while time.monotonic() < t_end:
        body = os.urandom(2 * KiB)
        s3.put_object(Bucket=BUCKET, Key=wal_key(50 + i), Body=body)
        assert s3.get_object(Bucket=BUCKET, Key=wal_key(50 + i))["Body"].read() == body
        i += 1
        time.sleep(1)
    assert front.proc.poll() is None and front.proc.pid == pid, "walstore exited or restarted"
    assert front.get("/metrics")[0] == 200
    st = status(front, name)
    assert st["state"] == "failing" and st["last_error"]["kind"] == "auth", st
    assert st["errors"].get("auth", 0) >= 2, st  # retried, with back-off
    assert (metric(front, "walstore_replication_errors_total", target=name, kind="auth") or 0) >= 1
    assert metric(front, "walstore_replication_failing", target=name) == 1
    warns = log_lines(front, "replication failing")
    assert 1 <= len(warns) <= 3, "\n".join(warns)
    assert mc.list_objects_v2(Bucket=tb).get("KeyCount", 0) == 0

    # Fixing the file is enough: after an auth (or configuration) error the worker drops its
    # client and builds it again on the next retry, reading the credentials file anew -- no
    # pause/resume, no remove+add. (pause/resume by itself re-reads nothing: the client is
    # cached per target settings and dropped only after such an error; a file rotated while
    # the old key still works is read at the next auth error or server restart.)
    minio.credentials_file(creds)
    st = wait_status(front, name, drained, 40, "the copy to complete with the fixed credentials file")
    assert st["last_error"] is None, st
    assert log_lines(front, "replication recovered")
    assert assert_copy_equals_front(s3, mc, tb, prefix) == len(objs) + i

    # pause holds changes back (journaled), resume sends them.
    assert front.admin("replication", "pause", name)["name"] == name
    s3.put_object(Bucket=BUCKET, Key=wal_key(90), Body=b"while paused")
    st = wait_status(front, name, lambda s: s["state"] == "paused" and s["backlog_objects"] == 1, 10, "paused")
    assert metric(front, "walstore_replication_paused", target=name) == 1
    time.sleep(2.5)  # > 2 worker rounds
    assert digest_of(mc, tb, f"{prefix}{BUCKET}/{wal_key(90)}") is None, "a paused target was written"
    front.admin("replication", "resume", name)
    wait_status(front, name, drained, 15, "the copy after resume")
    assert digest_of(mc, tb, f"{prefix}{BUCKET}/{wal_key(90)}") == sha(b"while paused")
    assert front.proc.pid == pid


# -- 4 -------------------------------------------------------------------------------------------


def test_rebuild_refuses_tampered_object(minio, mc, front, tmp_path):
    name, tb, prefix = "dr", "t-rebuild", "site-d/"
    mc.create_bucket(Bucket=tb)
    s3 = client(front.boto3_kwargs())
    objs = put_repo(s3, 1, 5)
    s3.put_object(Bucket=BUCKET, Key="db/basebackups_005/base_000000010000000000000001/metadata.json",
                  Body=b'{"start_lsn": 16777256}', ContentType="application/json",
                  Metadata={"walg-note": "kept as it was"})
    # A client's multipart upload (ETag "…-2", two blobs on the front: hashed as it is sent).
    mp = s3.create_multipart_upload(Bucket=BUCKET, Key=part_key(1, 2))["UploadId"]
    parts = [s3.upload_part(Bucket=BUCKET, Key=part_key(1, 2), UploadId=mp, PartNumber=n, Body=body)["ETag"]
             for n, body in ((1, os.urandom(5 * MiB)), (2, os.urandom(100 * KiB)))]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=part_key(1, 2), UploadId=mp, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(parts, 1)]})
    assert s3.head_object(Bucket=BUCKET, Key=part_key(1, 2))["ETag"].endswith('-2"')
    creds = minio.credentials_file(tmp_path / "minio.creds")
    add_target(front, name, minio.endpoint, tb, creds, prefix=prefix, deletes="mirror")
    wait_status(front, name, drained, 30, "the copy")
    keys = set(listing(s3, BUCKET))
    assert len(keys) == len(objs) + 2

    tampered = wal_key(3)
    tkey = f"{prefix}{BUCKET}/{tampered}"
    head = mc.head_object(Bucket=tb, Key=tkey)
    assert head["Metadata"].get("walstore-sha256") == sha(objs[tampered]), head["Metadata"]
    mc.put_object(Bucket=tb, Key=tkey, Body=b"not what walstore sent", Metadata=head["Metadata"])
    foreign = f"{prefix}{BUCKET}/db/not-from-walstore.txt"
    mc.put_object(Bucket=tb, Key=foreign, Body=b"planted by someone else")

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    cp = subprocess.run([walstore_exe(), "rebuild", "--data-dir", str(rebuilt), "--endpoint", minio.endpoint,
                         "--bucket", tb, "--prefix", prefix, "--credentials-file", str(creds)],
                        capture_output=True, text=True, timeout=120, env=env)
    out = cp.stdout
    assert cp.returncode == 1, f"rebuild exited {cp.returncode}\n{out}\n{cp.stderr}"
    lines = out.splitlines()
    refused_at = next(i for i, ln in enumerate(lines) if ln.startswith("REFUSED 1 objects"))
    refused = lines[refused_at + 1:]
    assert refused and refused[0].startswith(f"  {tkey}: changed on the target"), out
    assert not any(foreign in ln for ln in refused), out
    alone_at = next(i for i, ln in enumerate(lines) if "not written by walstore replication (left alone)" in ln)
    assert lines[alone_at].startswith("1 objects") and lines[alone_at + 1] == f"  {foreign}", out
    assert re.search(rf"^rebuilt {len(keys) - 1} objects", out, re.M), out
    assert re.search(rf"^walstore check: {len(keys) - 1} objects, 0 problems", out, re.M), out
    assert not (rebuilt / "rebuild-in-progress").exists()

    rs = Walstore(data_dir=rebuilt, buckets=[BUCKET], extra_args=PERMISSIVE).start()
    try:
        r3 = client(rs.boto3_kwargs())
        assert set(listing(r3, BUCKET)) == keys - {tampered}
        with pytest.raises(ClientError) as e:
            r3.head_object(Bucket=BUCKET, Key=tampered)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        for k in sorted(keys - {tampered}):
            a, b = s3.head_object(Bucket=BUCKET, Key=k), r3.head_object(Bucket=BUCKET, Key=k)
            for field in ("ETag", "LastModified", "ContentLength", "ContentType", "Metadata"):
                assert a.get(field) == b.get(field), f"{k}: {field} {b.get(field)!r} != {a.get(field)!r}"
            assert digest_of(r3, BUCKET, k) == digest_of(s3, BUCKET, k)
    finally:
        assert rs.stop() == 0


# -- 5 -------------------------------------------------------------------------------------------


def test_second_walstore_target_and_delay_policy(front, tmp_path):
    # The target is a walstore too (delete protection off there as well: the mirrored delete
    # of a WAL segment would otherwise be judged by the target's own retention policy).
    target = Walstore(data_dir=tmp_path / "target", buckets=["copy"], extra_args=PERMISSIVE).start()
    try:
        ts3 = client(target.boto3_kwargs())
        creds = tmp_path / "target.creds"
        creds.write_text(f"access_key_id = {target.access_key}\nsecret_access_key = {target.secret_key}\n")
        s3 = client(front.boto3_kwargs())
        objs = put_repo(s3, 1, 3)
        targets = {"keep-7d": None, "keep-never": "never", "mirror": "mirror"}
        for t, deletes in targets.items():
            add = add_target(front, t, target.endpoint, "copy", creds, prefix=f"{t}/", deletes=deletes)
            assert add["probe"] == "ok", add
        # The default policy, 7 days (status prints it as format_duration does: "delay 1w").
        assert status(front, "keep-7d")["deletes"] in ("delay 7d", "delay 1w")
        for t in targets:
            wait_status(front, t, drained, 30, f"the copy {t}")
            assert assert_copy_equals_front(s3, ts3, "copy", f"{t}/") == len(objs)

        gone = wal_key(2)
        t_delete = time.time()
        s3.delete_object(Bucket=BUCKET, Key=gone)
        wait_for(lambda: digest_of(ts3, "copy", f"mirror/{BUCKET}/{gone}") is None, 15, 0.3,
                 "the delete to reach the mirror copy")
        st = {t: wait_status(front, t, drained, 15, f"{t} to process the delete") for t in targets}
        assert st["mirror"]["replicated_deletes"] == 1 and st["mirror"]["held_deletes"] == 0, st["mirror"]
        d = wait_status(front, "keep-7d", lambda s: s["held_deletes"] == 1, 10, "the delete to be held")
        assert d["replicated_deletes"] == 0 and d["backlog_objects"] == 0, d
        assert d["next_held_delete_due"] >= t_delete + 7 * 86400 - 120, d
        n = st["keep-never"]
        assert n["replicated_deletes"] == 0 and n["held_deletes"] == 0, n
        time.sleep(2)  # two more worker rounds: nothing changes
        for t in ("keep-7d", "keep-never"):
            assert digest_of(ts3, "copy", f"{t}/{BUCKET}/{gone}") == sha(objs[gone]), f"{t} deleted its copy"
            assert len(listing(ts3, "copy", f"{t}/")) == len(objs)
        assert status(front, "keep-7d")["held_deletes"] == 1
        assert metric(front, "walstore_replication_held_deletes", target="keep-7d") == 1
        assert listing(ts3, "copy", f"mirror/{BUCKET}/") == listing(s3, BUCKET)
    finally:
        assert target.stop() == 0


# -- 6 -------------------------------------------------------------------------------------------


def test_kill9_mid_replication(minio, mc, tmp_path):
    name, tb, prefix = "crashy", "t-crash", "crash/"
    mc.create_bucket(Bucket=tb)
    seed = int(os.environ.get("WALSTORE_REPL_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"WALSTORE_REPL_CRASH_SEED={seed}")
    pool = [wal_key(n) for n in range(1, 13)] + [part_key(1), part_key(1, 2), sentinel_key(1), part_key(5),
                                                   sentinel_key(5)]
    # key -> possible states (sha256 hex, or None for absent): one state once the last
    # operation on the key was acknowledged, two if it was in flight at the kill.
    possible: dict[str, set[str | None]] = {k: {None} for k in pool}
    front = Walstore(data_dir=tmp_path / "front", buckets=[BUCKET], extra_args=PERMISSIVE, listen_port=free_port())
    creds = minio.credentials_file(tmp_path / "minio.creds")
    acked = maybe = 0
    pending_at_restart = []  # backlog found by each restart: what the kill interrupted
    try:
        for cycle in range(CRASH_CYCLES):
            front.start()
            if cycle == 0:
                add_target(front, name, minio.endpoint, tb, creds, prefix=prefix, deletes="mirror")
            else:
                pending_at_restart.append(status(front, name)["backlog_objects"])
            s3 = client(front.boto3_kwargs(), attempts=1, timeout=5)
            ops = []
            for _ in range(20):
                k = rng.choice(pool)
                if rng.random() < 0.2:
                    ops.append((k, None))
                else:
                    ops.append((k, sentinel_body(rng.randrange(1, 9)) if "sentinel" in k
                                else rng.randbytes(rng.randrange(1, 256) * KiB)))
            stop = threading.Event()
            pace = random.Random(rng.random())  # the writer thread's own generator

            def writer() -> None:
                nonlocal acked, maybe
                for k, body in ops:
                    if stop.is_set():
                        return
                    new = None if body is None else sha(body)
                    try:
                        if body is None:
                            r = s3.delete_object(Bucket=BUCKET, Key=k)
                        else:
                            r = s3.put_object(Bucket=BUCKET, Key=k, Body=body)
                        ok = r["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
                    except Exception:  # noqa: BLE001 - the kill: anything from a reset to a refusal
                        ok = False
                    if ok:
                        possible[k] = {new}
                        acked += 1
                    else:
                        possible[k] = possible[k] | {new}
                        maybe += 1
                        return  # the server is gone: nothing later was sent
                    time.sleep(pace.uniform(0.02, 0.15))

            w = threading.Thread(target=writer)
            w.start()
            time.sleep(rng.uniform(0.3, 2.5))  # mid-writes, or while the last ones are being copied
            front.kill()
            stop.set()
            w.join(30)
            assert not w.is_alive(), "the writer hung"
        front.start()
        pending_at_restart.append(status(front, name)["backlog_objects"])
        # The kills came while changes were still to be sent (else this tested nothing).
        assert sum(pending_at_restart) > 0, pending_at_restart
        st = wait_status(front, name, drained, 60, "the backlog to drain after the last restart")
        s3 = client(front.boto3_kwargs())
        front_state = {k: digest_of(s3, BUCKET, k) for k in pool}
        lost = {k: (front_state[k], possible[k]) for k in pool if front_state[k] not in possible[k]}
        assert not lost, f"the front lost acknowledged writes (seed {seed}): {lost}"
        assert set(listing(s3, BUCKET)) == {k for k, v in front_state.items() if v is not None}
        copy = listing(mc, tb, f"{prefix}{BUCKET}/")
        assert set(copy) == {k for k, v in front_state.items() if v is not None}, (
            f"seed {seed}: copy keys {sorted(copy)} != front keys "
            f"{sorted(k for k, v in front_state.items() if v is not None)}")
        for k in pool:
            got = digest_of(mc, tb, f"{prefix}{BUCKET}/{k}")
            assert got in possible[k], f"seed {seed}: {k} on the target is {got}, acknowledged {possible[k]}"
            assert got == front_state[k], f"seed {seed}: {k} on the target {got} != front {front_state[k]}"
        print(f"{CRASH_CYCLES} kill -9 cycles, {acked} acknowledged operations, {maybe} in flight at a kill; "
              f"backlog at each restart {pending_at_restart}; replicated {st['replicated_objects']} objects, "
              f"{st['replicated_deletes']} deletes after the last start")
        assert front.stop() == 0
    finally:
        if front.proc is not None:
            front.kill()
