"""A real WAL-G next to hostile clients: 1,000 slowloris connections.

While 1,000 connections trickle their request heads one byte every half second
(each is a connection slot and a task at the server), ``wal-g wal-push`` of a
16 MiB segment must succeed promptly, and ``wal-g wal-fetch`` must return its
bytes. The server runs with its default limits (``--max-connections 4096``,
``--header-timeout 30s``): the test also watches the header timeout close every
slowloris connection. Every loop is bounded in count and time; the figures are
printed (``-s``).

Run: ``WALSTORE_EXE=… WALG_EXE=… $WALSTORE_VENV/bin/python -m pytest -q -s tests/test_hostile.py``
(as root, like the other WAL-G suites: WAL-G runs as the ``postgres`` user).
"""
from __future__ import annotations

import os
import re
import resource
import socket
import threading
import time

import pytest

from harness import Walstore, wait_for
from pgcluster import print_log_tails, read_log, walg_sandbox, walstore_in

BUCKET = "backups"
REGION = "de01"
PREFIX = "spilo/hostile/wal/15"
SEGMENT_SIZE = 16 * 1024 * 1024
LORIS = 1000
HEADER_TIMEOUT = 30.0  # the server's default --header-timeout
KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    """walstore with default limits, one log line per request."""
    yield from walstore_in(sandbox, "walstore-hostile-", KEEP, region=REGION, buckets=[BUCKET])


def metric(store: Walstore, name: str) -> float:
    status, body = store.get("/metrics")
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


class Slowloris:
    """`n` connections, each sending its request head one byte per `every` seconds from one
    thread, until the server closes it or `limit` seconds pass. Records how long each lived
    from its first byte, which is what the server's header timeout bounds: the first bytes
    go out only once all `n` are open, which takes seconds on a loaded machine (a connection
    that stays silent is closed by the first-byte deadline, also the header timeout)."""

    def __init__(self, port: int, n: int, every: float = 0.5, limit: float = 60.0) -> None:
        self.port, self.n, self.every, self.limit = port, n, every, limit
        self.closed_after: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def __enter__(self) -> "Slowloris":
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(self.limit + 10)

    def wait_closed(self, timeout: float) -> None:
        """Waits until the server closed every connection (or `timeout`), then stops."""
        self.thread.join(timeout)
        self.stop.set()

    def _run(self) -> None:
        socks: dict[socket.socket, bytes] = {}
        opened: dict[socket.socket, float] = {}
        for i in range(self.n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            opened[s] = time.monotonic()
            s.setblocking(False)
            socks[s] = f"PUT /{BUCKET}/loris-{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode()
        pos = {s: 0 for s in socks}
        first: dict[socket.socket, float] = {}
        deadline = self.started + self.limit
        while socks and not self.stop.is_set() and time.monotonic() < deadline:
            for s in list(socks):
                head = socks[s]
                byte = head[pos[s]:pos[s] + 1] or b"a"
                gone = False
                try:
                    s.send(byte)
                    first.setdefault(s, time.monotonic())
                    pos[s] += 1
                    if s.recv(4096) == b"":  # the server closed it
                        gone = True
                except BlockingIOError:
                    pass  # nothing to read: still open
                except OSError:
                    gone = True
                if gone:
                    self.closed_after.append(time.monotonic() - first.get(s, opened[s]))
                    s.close()
                    del socks[s]
            self.stop.wait(self.every)
        for s in socks:
            s.close()


def push(sandbox, env, path) -> float:
    t = time.monotonic()
    sandbox.walg(env, "wal-push", str(path), timeout=120)
    return time.monotonic() - t


def test_wal_push_is_prompt_while_1000_slowloris_connections_trickle_headers(sandbox, store):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < LORIS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **store.boto3_kwargs())
    env = sandbox.envdir("hostile", {
        "AWS_ENDPOINT": store.endpoint,
        "AWS_REGION": REGION,
        "AWS_S3_FORCE_PATH_STYLE": "true",
        "WALG_DISABLE_S3_SSE": "true",
        "WALG_S3_PREFIX": f"s3://{BUCKET}/{PREFIX}",
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
    })
    wal = sandbox.mkdir("pg_wal")
    segs = []
    for i in (1, 2):
        data = os.urandom(SEGMENT_SIZE)
        segs.append((sandbox.write_file(wal / f"0000000100000000000000{i:02X}", data), data))
    try:
        baseline = push(sandbox, env, segs[0][0])
        with Slowloris(store.port, LORIS, limit=HEADER_TIMEOUT + 20) as loris:
            open_ = wait_for(lambda: (n := metric(store, "walstore_connections_open")) >= LORIS and n,
                             timeout=30, what=f"{LORIS} slowloris connections open at the server")
            under_attack = push(sandbox, env, segs[1][0])
            still_open = metric(store, "walstore_connections_open")
            fetched = wal / "fetched"
            sandbox.walg(env, "wal-fetch", segs[1][0].name, str(fetched), timeout=120)
            assert fetched.read_bytes() == segs[1][1], "wal-fetch returned other bytes"
            loris.wait_closed(HEADER_TIMEOUT + 15)
        closed = sorted(loris.closed_after)
        print(f"\nslowloris: {LORIS} connections trickling heads ({open_:.0f} open at the server, "
              f"{still_open:.0f} right after the push); wal-push of 16 MiB took {under_attack:.2f} s "
              f"(without them {baseline:.2f} s); the header timeout closed {len(closed)} of them "
              f"{closed[0] if closed else 0:.1f}–{closed[-1] if closed else 0:.1f} s after their first byte")
        keys = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])}
        assert len([k for k in keys if "/wal_005/" in k]) == 2, keys
        assert under_attack < 10, f"wal-push took {under_attack:.1f} s next to the slowloris connections"
        assert len(closed) == LORIS, f"only {len(closed)} of {LORIS} slowloris connections were closed by the server"
        assert closed[-1] < HEADER_TIMEOUT + 5, f"the last slowloris connection lived {closed[-1]:.1f} s"
        # WAL-G retries 5xx silently: none may have happened.
        errors = [ln for ln in read_log(store.log_path).splitlines() if re.search(r"status=5\d\d", ln)]
        assert not errors, "\n".join(errors[:10])
    except BaseException:
        print_log_tails(failed_requests=True)
        raise
