"""Tiering with a real MinIO target, proven with WAL-G v3.0.9 and PostgreSQL 15.

One walstore (``--tier-interval 1s``, a fixed loopback port so restarts keep
its address) replicates every bucket to a real MinIO (target ``to-minio``,
prefix ``site-a/``). Steps in file order:

1. PostgreSQL archives to the bucket ``pgb`` with ``archive_command = wal-g
   wal-push``; three full backups with rows between them; a recorded time
   (and the exact row count at it) after the OLDEST backup; the primary
   stops; replication settles (backlog 0). Every object of the repository is
   read once (SHA-256, MD5, HEAD) before anything is evicted.
2. ``walstore tier set pgb/<repo>/ --target to-minio --after 0s`` (keep the
   newest backup): once the worker is stable, the blob directory shrank by
   exactly the evicted bytes, the blob files that vanished are exactly those
   of the objects outside the hot set (the newest backup, WAL from its start
   segment on, history files; inline objects and shared blobs stay), and
   ``tier list``/``tier status``/``/metrics`` agree.
3. GET, HEAD and Range GETs (across 1 MiB block boundaries, suffix ranges) of
   tiered objects answer what they answered before the eviction.
4. WAL-G ``backup-fetch`` of the oldest (tiered) backup + ``wal-fetch`` of
   tiered WAL: recovery to the recorded time gives exactly the recorded rows.
5. kill -9 during eviction: the bucket ``bulk`` gets a tier policy. First the
   failpoint ``tier-evict-recorded`` kills the server between an eviction's
   commit and the blob file's removal; then each of
   ``WALSTORE_TIER_CRASH_CYCLES`` (default 10) cycles starts the server, PUTs a
   batch of random objects and SIGKILLs it 0-30 ms after the first blob of the
   batch is evicted (seed ``WALSTORE_TIER_CRASH_SEED``; at least half of the
   kills must leave a batch partly evicted). Afterwards eviction completes, no
   blob file is leaked or missing, ``walstore check`` is clean and every object
   reads back with its MD5.
6. MinIO stopped: a GET of a tiered object fails with 503 SlowDown within
   seconds; HEAD of it, GET of local objects, PUT, and PostgreSQL's wal-push
   keep working; nothing unconfirmed is evicted. MinIO back: the tiered GET
   works again and the pending object is evicted.
7. ``tier remove``: the evicted bytes come back (blob directory grows by
   exactly them); with MinIO stopped every object reads back.
8. Bad input: unknown target, a target not covering the bucket, bad duration,
   missing bucket, a versioned bucket: exit 1 with one line; versioning cannot
   be enabled on a bucket with a tier policy; the target of a policy cannot be
   removed.
9. No request was answered with 5xx, except the 503s of step 6.

A step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_tiering.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import test_replication_walg as repl
from harness import Minio, Walstore, free_port, wait_for, walstore_exe
from pgcluster import Cluster, read_log, walstore_in
from test_replication_walg import MINIO_BUCKET, SITE, s3_client, walg_env
from test_walg import REGION, archive_settings, backup_list, backup_push, restore
from test_walg_lock import with_logs

KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
BUCKET = "pgb"  # the WAL-G repository's bucket
REPO = "spilo/tier/wal/15"  # the WAL-G repository inside BUCKET
BULK = "bulk"  # random objects for the kill -9 cycles (not a WAL-G repository)
TARGET = "to-minio"
#: Objects up to this size live in the index (storage::INLINE_MAX) and are never evicted.
INLINE_MAX = 64 * 1024
BLOCK = 1 << 20  # storage::BLOCK_SIZE: the unit of the per-block CRCs
CRASH_CYCLES = int(os.environ.get("WALSTORE_TIER_CRASH_CYCLES", "10"))
CRASH_SEED = int(os.environ.get("WALSTORE_TIER_CRASH_SEED", str(random.randrange(1 << 30))))
CRASH_BATCH = 40  # objects PUT per cycle
ROWS = 20_000  # rows per batch: a few MB of WAL, far above INLINE_MAX once compressed

#: Module fixtures shared with the replication suite: the WAL-G sandbox, a work directory, a MinIO.
sandbox, workdir, minio = repl.sandbox, repl.workdir, repl.minio


@dataclass
class Obj:
    """What a client saw of an object before anything was evicted."""

    size: int
    etag: str
    md5: str
    sha: str
    head: dict


def head_facts(h: dict) -> dict:
    return {f: h.get(f) for f in ("ETag", "ContentLength", "ContentType", "LastModified", "Metadata",
                                  "ContentEncoding")}


def blob_files(root: Path) -> dict[str, int]:
    """Every finished blob file under DATA_DIR/blobs (not blobs/tmp): SHA-256 hex -> st_size."""
    out: dict[str, int] = {}
    for d, dirs, files in os.walk(root):
        if Path(d) == root:
            dirs[:] = [x for x in dirs if x != "tmp"]
        for f in files:
            try:
                out[f] = os.stat(os.path.join(d, f)).st_size
            except FileNotFoundError:  # evicted while we walked
                pass
    return out


def blob_path(root: Path, sha: str) -> Path:
    return root / sha[:2] / sha[2:4] / sha


def segno(name: str) -> int:
    """The segment number of a 24-hex WAL file name (timeline ignored)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def metric(text: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of every sample of `name` in a Prometheus text page."""
    out = []
    for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        out.append((labels, float(m.group(2))))
    return out


def one_line_error(r: dict, what: str) -> str:
    """`server.admin(..., check=False)` failed with exit 1 and one `walstore: ...` line."""
    assert "error" in r, f"{what}: expected an error, got {r}"
    lines = r["error"].splitlines()
    assert r["code"] == 1 and len(lines) == 1 and lines[0].startswith("walstore: "), f"{what}: {r}"
    assert "panicked" not in r["error"], f"{what}: {r}"
    return lines[0]


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(sandbox):
    """The walstore under test; a fixed port, so a restart keeps WAL-G's and PostgreSQL's endpoint."""
    yield from walstore_in(sandbox, "walstore-tier-", KEEP, extra_args=("--tier-interval", "1s"),
                           buckets=[BUCKET, BULK], region=REGION, listen_port=free_port())


class Scenario:
    """State shared by the steps."""

    def __init__(self, sandbox, workdir: Path, minio: Minio, store: Walstore) -> None:
        self.sb, self.dir, self.minio, self.store = sandbox, workdir, minio, store
        self.blobs = store.data_dir / "blobs"
        self.env = walg_env(self, "tier", store, f"s3://{BUCKET}/{REPO}")
        self.primary: Cluster | None = None
        self.clusters: list[Cluster] = []
        self.done: set[str] = set()
        self.backups: list[str] = []  # oldest first; all full
        self.start_wal: dict[str, str] = {}  # backup -> its start WAL file name
        self.pitr: tuple[int, str] = (0, "")
        self.objects: dict[str, Obj] = {}  # the repository, by key relative to REPO/
        self.blobs_before: dict[str, int] = {}  # blob files before the first eviction
        self.blobs_evicted: dict[str, int] = {}  # blob files after the repository's eviction
        self.evicted: set[str] = set()  # keys (relative to REPO/) whose blob is remote
        self.bulk: dict[str, Obj] = {}  # BULK, by key
        self.extra: dict[tuple[str, str], Obj] = {}  # (bucket, key) of objects written in step 6
        self.down_windows: list[tuple[int, int]] = []  # log byte ranges while MinIO was stopped
        self.s3 = s3_client(store.boto3_kwargs())

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def status(self) -> dict:
        return self.store.admin("tier", "status")

    def metrics(self) -> str:
        code, body = self.store.get("/metrics")
        assert code == 200, (code, body[:300])
        return body.decode()

    def read(self, bucket: str, key: str) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def record(self, bucket: str, key: str, body: bytes | None = None) -> Obj:
        """Reads an object (unless `body` is given: what was PUT) and HEADs it."""
        h = self.s3.head_object(Bucket=bucket, Key=key)
        body = self.read(bucket, key) if body is None else body
        return Obj(len(body), h["ETag"], hashlib.md5(body).hexdigest(), hashlib.sha256(body).hexdigest(),
                   head_facts(h))

    def same_bytes(self, bucket: str, key: str, o: Obj, where: str) -> None:
        body = self.read(bucket, key)
        assert (len(body), hashlib.sha256(body).hexdigest()) == (o.size, o.sha), \
            f"{where}: {bucket}/{key} reads {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}; " \
            f"expected {o.size} bytes, {o.sha}"

    def hot(self, rel: str) -> bool:
        """Whether `rel` (a key under REPO/) is in the hot set of keep-newest-backups 1."""
        newest = self.backups[-1]
        if rel.startswith(f"basebackups_005/{newest}"):
            return True
        m = re.match(r"wal_005/([0-9A-F]{24})", rel)
        if m:
            return segno(m.group(1)) >= segno(self.start_wal[newest])
        return rel.startswith("wal_005/") and ".history" in rel

    def evictable(self) -> set[str]:
        """Keys of the repository whose blob the policy must evict: not hot, not inline, not shared."""
        shas: dict[str, int] = {}
        for o in self.objects.values():
            shas[o.sha] = shas.get(o.sha, 0) + 1
        return {k for k, o in self.objects.items() if o.size > INLINE_MAX and not self.hot(k) and shas[o.sha] == 1}

    def wait_stable(self, pred, what: str, timeout: float = 120) -> dict:
        """Polls `tier status` until pred(status) holds, the worker reports no error, and remote
        bytes/blobs have not changed during two complete worker passes. A panic in the log fails at once."""
        last, since, st = None, 0, {}
        log_from = self.store.log_path.stat().st_size
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.store.log_path.read_bytes()[log_from:]
            if b"panicked at" in new:
                text = re.sub(r"\x1b\[[0-9;]*m", "", new.decode(errors="replace"))
                at = text.index("panicked at")
                raise AssertionError(f"walstore panicked while waiting for {what}:\n{text[max(0, at - 300):at + 2500]}")
            st = self.status()
            now = (st["remote_bytes"], st["remote_blobs"])
            if now != last:
                last, since = now, st["passes"]
            elif st["passes"] >= since + 2 and st.get("last_error") is None and pred(st):
                return st
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; tier status:\n{json.dumps(st, indent=1)}")

    def wait_replicated(self, timeout: float = 180) -> None:
        def settled() -> bool:
            s = self.store.admin("replication", "status", TARGET)
            return s["state"] == "ok" and s["backlog_objects"] == 0
        try:
            wait_for(settled, timeout=timeout, interval=0.5, what="replication to MinIO to settle")
        except TimeoutError as e:
            raise AssertionError(f"{e}: {json.dumps(self.store.admin('replication', 'status', TARGET), indent=1)}") \
                from None


@pytest.fixture(scope="module")
def scenario(sandbox, workdir, minio, store):
    sc = Scenario(sandbox, workdir, minio, store)
    try:
        yield sc
    finally:
        for c in reversed(sc.clusters):
            c.destroy()
        if sc.minio.proc is None:
            sc.minio.start()  # the fixture stops what it started
        if store.proc is None:
            store.start()  # walstore_in stops it and wants exit status 0


def add_rows(c: Cluster, batch: int, n: int) -> None:
    c.sql(f"INSERT INTO t (batch, pad) SELECT {batch}, md5(random()::text) || md5(random()::text) "
          f"FROM generate_series(1, {n})")


# -- step 1 -------------------------------------------------------------------------


@with_logs
def test_repository_with_three_full_backups(scenario: Scenario):
    """Step 1: replication to MinIO; wal-push + three full backups; a recorded time after the oldest."""
    sc, sb = scenario, scenario.sb
    added = sc.store.admin("replication", "add", TARGET, "--endpoint", sc.minio.endpoint, "--bucket", MINIO_BUCKET,
                           "--prefix", SITE, "--region", sc.minio.region, "--credentials-file",
                           str(sc.minio.credentials_file(sc.dir / "minio.cred")), "--deletes", "mirror")
    assert added.get("name") == TARGET and added.get("probe") == "ok", added

    p = sc.primary = Cluster(sb, "tier-primary")
    sc.clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(sc.env))
    p.start()
    p.sql("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL, pad text NOT NULL)")
    add_rows(p, 1, ROWS)
    p.switch_and_wait()
    sc.backups.append(backup_push(sb, sc.env, p))  # the oldest: it will be tiered
    # The recorded time lies in the WAL after the oldest backup, between two batches.
    add_rows(p, 2, ROWS)
    count, at = int(p.sql("SELECT count(*) FROM t")), p.sql("SELECT clock_timestamp()")
    time.sleep(0.2)
    p.sql("INSERT INTO t (batch, pad) SELECT 3, 'after' FROM generate_series(1, 567)")
    p.switch_and_wait()
    sc.pitr = (count, at)
    assert count == 2 * ROWS, count
    sc.backups.append(backup_push(sb, sc.env, p))
    add_rows(p, 4, ROWS)
    p.switch_and_wait()
    sc.backups.append(backup_push(sb, sc.env, p))  # the newest: it stays local
    add_rows(p, 5, 1000)
    p.switch_and_wait()
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0, "archive_command failed"
    p.stop()  # the archiver's last round ends with the postmaster: the repository is final now

    listed = backup_list(sb, sc.env)
    assert [b["backup_name"] for b in listed] == sc.backups, listed
    assert not any("_D_" in b for b in sc.backups), sc.backups
    sc.start_wal = {b["backup_name"]: b["wal_file_name"] for b in listed}
    sc.wait_replicated()

    keys = repl.listing(sc.s3, BUCKET, REPO)
    sc.objects = {k: sc.record(BUCKET, f"{REPO}/{k}") for k in keys}
    multipart = [k for k, o in sc.objects.items() if "-" in o.etag]
    assert not multipart, f"the scenario assumes single-part objects (blob = SHA-256 of the object): {multipart}"
    evictable = sc.evictable()
    oldest = [k for k in evictable if k.startswith(f"basebackups_005/{sc.backups[0]}/")]
    old_wal = [k for k in evictable if k.startswith("wal_005/")]
    hot_big = [k for k, o in sc.objects.items() if sc.hot(k) and o.size > INLINE_MAX]
    assert oldest and old_wal and hot_big, \
        f"the repository must have tierable backup files and WAL and big hot files:\n" \
        f"{ {k: o.size for k, o in sorted(sc.objects.items())} }"
    sc.done.add("setup")


# -- step 2 -------------------------------------------------------------------------


@with_logs
def test_eviction_shrinks_blob_dir_by_evicted_bytes(scenario: Scenario):
    """Step 2: tier set --after 0s: exactly the cold blobs leave; status, list and metrics agree."""
    sc = scenario
    sc.require("setup")
    sc.blobs_before = blob_files(sc.blobs)
    out = sc.store.admin("tier", "set", f"{BUCKET}/{REPO}/", "--target", TARGET, "--after", "0s")
    assert (out.get("bucket"), out.get("prefix", "").strip("/"), out.get("target")) == (BUCKET, REPO, TARGET), out
    assert out.get("keep-newest-backups") == 1, out
    (pol,) = sc.store.admin("tier", "list")["policies"]
    assert (pol["bucket"], pol["prefix"].strip("/"), pol["target"], pol["keep-newest-backups"]) == \
        (BUCKET, REPO, TARGET, 1), pol
    assert pol.get("created"), pol

    st = sc.wait_stable(lambda s: s["remote_bytes"] > 0, "the repository's eviction")
    after = blob_files(sc.blobs)
    sc.blobs_evicted = after
    vanished = {h: n for h, n in sc.blobs_before.items() if h not in after}
    appeared = sorted(set(after) - set(sc.blobs_before))
    assert not appeared, f"eviction created blob files: {appeared[:5]}"
    shrink = sum(sc.blobs_before.values()) - sum(after.values())
    print(f"blob dir: {sum(sc.blobs_before.values())} -> {sum(after.values())} bytes; tier status:\n"
          f"{json.dumps(st, indent=1)}")
    assert shrink == sum(vanished.values()) == st["remote_bytes"] == st["evicted_bytes"], \
        (shrink, sum(vanished.values()), st)
    assert st["remote_blobs"] == len(vanished), (len(vanished), st)

    # Which objects left: exactly the cold ones (not the newest backup, not WAL from its start on).
    remote = {k for k, o in sc.objects.items() if o.size > INLINE_MAX and o.sha in vanished}
    kept = {k for k, o in sc.objects.items() if o.size > INLINE_MAX and blob_path(sc.blobs, o.sha).exists()}
    want = sc.evictable()
    assert remote == want, f"hot objects evicted: {sorted(remote - want)}; cold objects kept: {sorted(want - remote)}"
    assert kept | remote == {k for k, o in sc.objects.items() if o.size > INLINE_MAX}, "an object lost its blob"
    assert {sc.objects[k].sha for k in remote} == set(vanished), "blobs of no object of the repository vanished"
    assert st["evicted_objects"] == len(remote), (len(remote), st)
    sc.evicted = remote

    # The worker's view of the scope, and /metrics.
    scopes = [s for s in st["scopes"] if s["bucket"] == BUCKET]
    assert len(scopes) == 1, st["scopes"]
    scope = scopes[0]
    total = sum(o.size for o in sc.objects.values())
    remote_size = sum(sc.objects[k].size for k in remote)
    assert (scope["repository"] or "").strip("/") == REPO, scope
    assert (scope["remote_objects"], scope["remote_bytes"]) == (len(remote), remote_size), (len(remote), scope)
    assert (scope["local_objects"], scope["local_bytes"]) == (len(sc.objects) - len(remote), total - remote_size), \
        (len(sc.objects), total, scope)
    assert st["passes"] >= 2 and st["last_pass"], st
    assert [p["bucket"] for p in st["policies"]] == [BUCKET], st["policies"]

    text = sc.metrics()
    for name, want_value in (("walstore_tier_remote_bytes", remote_size),
                             ("walstore_tier_local_bytes", total - remote_size)):
        got = [v for labels, v in metric(text, name)
               if labels.get("bucket") == BUCKET and labels.get("repository", "").strip("/") == REPO]
        assert got == [want_value], f"{name} of {BUCKET}/{REPO}: {got}, want {want_value}\n" + \
            "\n".join(ln for ln in text.splitlines() if ln.startswith("walstore_tier"))
    for name, want_value in (("walstore_tier_evicted_bytes_total", st["evicted_bytes"]),
                             ("walstore_tier_evicted_objects_total", st["evicted_objects"])):
        got = [v for _, v in metric(text, name)]
        assert got == [want_value], f"{name}: {got}, want {want_value}"
    last_pass = [v for _, v in metric(text, "walstore_tier_last_pass_timestamp_seconds")]
    assert last_pass and abs(time.time() - max(last_pass)) < 60, last_pass
    sc.done.add("evicted")


# -- step 3 -------------------------------------------------------------------------


@with_logs
def test_tiered_get_head_range_unchanged(scenario: Scenario):
    """Step 3: GET, HEAD and Range GET of tiered objects answer as before the eviction."""
    sc = scenario
    sc.require("evicted")
    reads_before = sc.status()["remote_reads"]
    for k in sorted(sc.evicted):
        o = sc.objects[k]
        assert head_facts(sc.s3.head_object(Bucket=BUCKET, Key=f"{REPO}/{k}")) == o.head, k
        got = sc.s3.get_object(Bucket=BUCKET, Key=f"{REPO}/{k}")
        body = got["Body"].read()
        assert (len(body), hashlib.md5(body).hexdigest(), hashlib.sha256(body).hexdigest()) == \
            (o.size, o.md5, o.sha), k
        assert got["ETag"] == o.etag and got["ContentLength"] == o.size, (k, got["ETag"], o.etag)

    big = max(sc.evicted, key=lambda k: sc.objects[k].size)
    o = sc.objects[big]
    whole = sc.read(BUCKET, f"{REPO}/{big}")
    n = o.size
    ranges = [(0, 0), (1, 100), (n - 1, n - 1), (BLOCK - 10, BLOCK + 10), (BLOCK, min(n, 3 * BLOCK) - 1),
              (n // 3, 2 * n // 3)]
    for first, last in ranges:
        if not 0 <= first <= last < n:
            continue
        got = sc.s3.get_object(Bucket=BUCKET, Key=f"{REPO}/{big}", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == whole[first:last + 1], (big, n, first, last)
        assert got["ContentRange"] == f"bytes {first}-{last}/{n}", got["ContentRange"]
    for suffix in (1, 1000, BLOCK + 7):
        got = sc.s3.get_object(Bucket=BUCKET, Key=f"{REPO}/{big}", Range=f"bytes=-{suffix}")
        assert got["Body"].read() == whole[-suffix:], (big, n, suffix)
    got = sc.s3.get_object(Bucket=BUCKET, Key=f"{REPO}/{big}", Range=f"bytes={n - 5}-")
    assert got["Body"].read() == whole[n - 5:]

    st = sc.status()
    assert st["remote_reads"] > reads_before and st["remote_read_failures"] == 0, st
    assert st["remote_bytes"] == sum(sc.objects[k].size for k in sc.evicted), "a read brought bytes back"
    hist = [v for labels, v in metric(sc.metrics(), "walstore_tier_remote_read_seconds_count")]
    assert hist and sum(hist) >= st["remote_reads"] > 0, (hist, st)
    sc.done.add("reads")


# -- step 4 -------------------------------------------------------------------------


@with_logs
def test_pitr_from_oldest_tiered_backup(scenario: Scenario):
    """Step 4: backup-fetch of the oldest (tiered) backup + wal-fetch of tiered WAL: the exact rows."""
    sc = scenario
    sc.require("evicted")
    count, at = sc.pitr
    oldest = sc.backups[0]
    assert any(k.startswith(f"basebackups_005/{oldest}/") for k in sc.evicted), sorted(sc.evicted)
    reads_before = sc.status()["remote_reads"]
    r = restore(sc.sb, sc.env, oldest, "tier-pitr", recovery_target_time=at, recovery_target_action="promote")
    sc.clusters.append(r)
    try:
        r.start()
        r.wait_promoted()
        got = int(r.sql("SELECT count(*) FROM t"))
        assert got == count, f"restored {got} rows, expected exactly {count} (recovery_target_time {at})"
        assert r.sql("SELECT count(*) FROM t WHERE batch = 3") == "0"
        log = read_log(r.log)
        assert "recovery stopping before commit" in log, "recovery did not stop at the target time"
        fetched = set(re.findall(r'restored log file "([0-9A-F]{24})" from archive', log))
        tiered_wal = {m.group(1) for k in sc.evicted for m in [re.match(r"wal_005/([0-9A-F]{24})\.", k)] if m}
        assert fetched & tiered_wal, f"no tiered WAL was fetched: fetched {sorted(fetched)}, tiered {sorted(tiered_wal)}"
    finally:
        r.destroy()
        sc.clusters.remove(r)
    st = sc.status()
    assert st["remote_reads"] > reads_before and st["remote_read_failures"] == 0, st
    sc.done.add("pitr")


# -- step 5 -------------------------------------------------------------------------


def put_batch(sc: Scenario, rng: random.Random, name: str, n: int) -> tuple[dict[str, Obj], dict[str, Obj]]:
    """PUTs `n` random objects crash/<name>/NNN.bin into BULK: (acknowledged, sent but unanswered
    because the server died)."""
    s3 = s3_client(sc.store.boto3_kwargs())
    acked: dict[str, Obj] = {}
    for i in range(n):
        key = f"crash/{name}/{i:03d}.bin"
        body = rng.randbytes(rng.randint(INLINE_MAX + 1, 256 * 1024))
        o = Obj(len(body), "", hashlib.md5(body).hexdigest(), hashlib.sha256(body).hexdigest(), {})
        try:
            o.etag = s3.put_object(Bucket=BULK, Key=key, Body=body)["ETag"]
        except Exception:
            if sc.store.proc is None or sc.store.proc.poll() is None:
                raise
            return acked, {key: o}  # the server died (failpoint) during this PUT
        assert o.etag.strip('"') == o.md5, key
        acked[key] = o
    return acked, {}


@with_logs
def test_kill_9_during_eviction_loses_nothing(scenario: Scenario, monkeypatch):
    """Step 5: the eviction failpoint once, then SIGKILL right after eviction of a batch started,
    CRASH_CYCLES times; nothing is lost, nothing leaks."""
    sc, s = scenario, scenario.store
    sc.require("evicted")
    rng = random.Random(CRASH_SEED)
    print(f"WALSTORE_TIER_CRASH_SEED={CRASH_SEED} WALSTORE_TIER_CRASH_CYCLES={CRASH_CYCLES}")
    out = s.admin("tier", "set", BULK, "--target", TARGET, "--after", "0s")
    assert out.get("bucket") == BULK and out.get("target") == TARGET, out

    # Deterministic: the server kills itself after an eviction's tier record is committed and
    # before the blob file is removed (failpoint tier-evict-recorded).
    assert s.stop() == 0
    monkeypatch.setenv("WALSTORE_FAILPOINTS", "tier-evict-recorded")
    s.start()
    monkeypatch.delenv("WALSTORE_FAILPOINTS")
    batch, maybe = put_batch(sc, rng, "fp", 10)
    sc.bulk.update(batch)
    try:
        s.proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the failpoint tier-evict-recorded did not fire within 60 s; "
                             f"tier status {json.dumps(sc.status(), indent=1)}") from None
    assert s.stop() == -9, "the failpoint should end the server with SIGKILL"
    assert "failpoint reached" in read_log(s.log_path)[-20_000:]
    left = sum(blob_path(sc.blobs, o.sha).exists() for o in batch.values())
    assert left == len(batch), f"{len(batch) - left} blob files removed although the first eviction died"

    partial, summary = 0, []
    try:
        for cycle in range(CRASH_CYCLES):
            if s.proc is None:
                s.start()
            batch, _ = put_batch(sc, rng, f"{cycle:02d}", CRASH_BATCH)
            sc.bulk.update(batch)  # acknowledged: must survive
            paths = [blob_path(sc.blobs, o.sha) for o in batch.values()]
            t0 = time.monotonic()
            while all(p.exists() for p in paths):
                if time.monotonic() - t0 > 60:
                    raise AssertionError(f"cycle {cycle}: nothing of the batch was evicted within 60 s; "
                                         f"tier status {json.dumps(sc.status(), indent=1)}")
                time.sleep(0.002)
            delay = rng.uniform(0, 0.03)
            time.sleep(delay)
            s.kill()
            local = sum(p.exists() for p in paths)
            partial += 0 < local
            summary.append(f"cycle {cycle}: killed {delay * 1000:.0f} ms after the first eviction "
                           f"({time.monotonic() - t0:.2f}s after the PUTs), {local}/{len(paths)} of the batch local")
    finally:
        print("\n".join(summary))
        if s.proc is None:
            s.start()
    # Evictions commit a page of objects per synced write, so a kill rarely splits a batch
    # between "recorded" and "unlinked"; the failpoint above puts the server in exactly that
    # state every time. These cycles kill it at random moments right after eviction began.
    print(f"{partial} of {CRASH_CYCLES} kills left the batch partly evicted")
    for k, o in maybe.items():  # the PUT the failpoint interrupted: all or nothing
        try:
            h = sc.s3.head_object(Bucket=BULK, Key=k)
        except Exception:
            continue
        o.etag = h["ETag"]
        sc.bulk[k] = o

    # Restarted: eviction completes; exactly the repository's remaining blobs are left.
    bulk_bytes = sum(o.size for o in sc.bulk.values())
    repo_remote = sum(sc.objects[k].size for k in sc.evicted)
    st = sc.wait_stable(lambda st: st["remote_bytes"] == repo_remote + bulk_bytes,
                        "eviction of every bulk object after the kills", timeout=180)
    assert st["remote_blobs"] == len(sc.evicted) + len(sc.bulk), st
    now = blob_files(sc.blobs)
    leaked = sorted(set(now) - set(sc.blobs_evicted))
    missing = sorted(set(sc.blobs_evicted) - set(now))
    assert not leaked and not missing, f"blob files leaked {leaked[:5]} ({len(leaked)}), missing {missing[:5]}"
    assert not any((sc.blobs / "tmp").iterdir()), list((sc.blobs / "tmp").iterdir())

    code = s.stop()
    assert code == 0, f"walstore exited {code}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    cp = subprocess.run([walstore_exe(), "check", "--data-dir", str(s.data_dir), "--json"], capture_output=True,
                        text=True, timeout=300, env=env)
    print(f"walstore check: exit {cp.returncode}\n{cp.stdout[-3000:]}\n{cp.stderr[-2000:]}")
    assert cp.returncode == 0, f"walstore check after the kills: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    report = json.loads(cp.stdout)
    assert report["problems"] == [] and report["orphan_files"] == 0, report
    assert report["objects"] >= len(sc.objects) + len(sc.bulk), report
    s.start()

    for k, o in sorted(sc.bulk.items()):
        sc.same_bytes(BULK, k, o, "after the kills")
    for k in sorted(sc.evicted):
        sc.same_bytes(BUCKET, f"{REPO}/{k}", sc.objects[k], "after the kills")
    assert len(repl.listing(sc.s3, BULK, "crash")) == len(sc.bulk)
    sc.done.add("crash")


# -- step 6 -------------------------------------------------------------------------


@with_logs
def test_minio_down_tiered_get_503_local_and_archiving_work(scenario: Scenario):
    """Step 6: MinIO stopped: tiered GET -> 503 SlowDown quickly; the rest keeps working."""
    from botocore.config import Config
    from botocore.exceptions import ClientError
    import boto3

    sc, s = scenario, scenario.store
    sc.require("evicted")
    once = boto3.client("s3", **s.boto3_kwargs(), config=Config(
        s3={"addressing_style": "path"}, retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5, read_timeout=60))
    tiered = max(sc.evicted, key=lambda k: sc.objects[k].size)
    local = max((k for k, o in sc.objects.items() if sc.hot(k) and o.size > INLINE_MAX),
                key=lambda k: sc.objects[k].size)
    assert blob_path(sc.blobs, sc.objects[local].sha).exists() and \
        not blob_path(sc.blobs, sc.objects[tiered].sha).exists(), (local, tiered)
    p = sc.primary
    assert p is not None
    p.start()
    failed_before = int(p.sql("SELECT failed_count FROM pg_stat_archiver"))
    st0 = sc.status()

    sc.minio.stop()
    start_off = s.log_path.stat().st_size
    try:
        for rng in (None, "bytes=0-99", f"bytes={BLOCK}-{BLOCK + 99}"):
            t0 = time.monotonic()
            with pytest.raises(ClientError) as e:
                once.get_object(Bucket=BUCKET, Key=f"{REPO}/{tiered}", **({"Range": rng} if rng else {}))["Body"].read()
            took = time.monotonic() - t0
            resp = e.value.response
            assert (resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]) == (503, "SlowDown"), resp
            assert took < 15, f"the failing GET ({rng}) took {took:.1f}s"
        # What needs no bytes from MinIO keeps working.
        assert head_facts(once.head_object(Bucket=BUCKET, Key=f"{REPO}/{tiered}")) == sc.objects[tiered].head
        sc.same_bytes(BUCKET, f"{REPO}/{local}", sc.objects[local], "MinIO down")
        note = b"written while the tier target was down\n"
        sc.s3.put_object(Bucket=BUCKET, Key="notes/minio-down.txt", Body=note)
        assert sc.read(BUCKET, "notes/minio-down.txt") == note
        pending = random.Random(CRASH_SEED + 1).randbytes(300 * 1024)
        sc.s3.put_object(Bucket=BULK, Key="pending/while-down.bin", Body=pending)
        sc.extra[(BUCKET, "notes/minio-down.txt")] = sc.record(BUCKET, "notes/minio-down.txt", note)
        sc.extra[(BULK, "pending/while-down.bin")] = sc.record(BULK, "pending/while-down.bin", pending)
        # wal-push into walstore: a new segment is archived, no archive_command failed.
        add_rows(p, 6, 2000)
        seg = p.switch_and_wait(timeout=60)
        arch = p.sql("SELECT failed_count, last_archived_wal FROM pg_stat_archiver").split("|")
        assert int(arch[0]) == failed_before and arch[1] >= seg, (arch, failed_before, seg)
        # The worker notices (a failed pass leaves last_error); nothing unconfirmed is evicted meanwhile.
        wait_for(lambda: sc.status()["last_error"], timeout=30, interval=0.3,
                 what="tier status to report the unreachable target")
        time.sleep(3)  # three more tier intervals
        assert blob_path(sc.blobs, hashlib.sha256(pending).hexdigest()).exists(), "an unreplicated blob was evicted"
        st = sc.status()
        assert st["remote_read_failures"] >= st0["remote_read_failures"] + 3, st
        failures = [v for _, v in metric(sc.metrics(), "walstore_tier_remote_read_failures_total")]
        assert sum(failures) >= 3, failures
        logged = re.sub(r"\x1b\[[0-9;]*m", "", s.log_path.read_bytes()[start_off:].decode(errors="replace"))
        clear = [ln for ln in logged.splitlines()
                 if re.search(r" (WARN|ERROR) ", ln) and ("tier" in ln or tiered in ln)]
        assert clear, "no warning or error about the failed tiered reads in the log:\n" + logged[-3000:]
    finally:
        sc.down_windows.append((start_off, s.log_path.stat().st_size))
        p.stop()
        sc.minio.start()

    def works() -> bool:
        try:
            return hashlib.sha256(sc.read(BUCKET, f"{REPO}/{tiered}")).hexdigest() == sc.objects[tiered].sha
        except ClientError:
            return False
    wait_for(works, timeout=30, interval=0.5, what="the tiered GET to work again with MinIO back")
    sc.wait_replicated()
    pending_blob = blob_path(sc.blobs, hashlib.sha256(pending).hexdigest())
    wait_for(lambda: not pending_blob.exists(), timeout=60, interval=0.3,
             what="the object PUT while MinIO was down to be evicted once it is replicated")
    sc.done.add("down")


# -- step 7 -------------------------------------------------------------------------


@with_logs
def test_tier_remove_rehydrates(scenario: Scenario):
    """Step 7: tier remove: every evicted byte comes back, verified; reads need no MinIO."""
    sc, s = scenario, scenario.store
    sc.require("evicted")
    policies = [(p["bucket"], p["prefix"]) for p in sc.store.admin("tier", "list")["policies"]]
    st = sc.wait_stable(lambda st: True, "a stable tier state before the removal")
    local_before = sum(blob_files(sc.blobs).values())
    remote = st["remote_bytes"]
    assert remote > 0, st
    for bucket, prefix in policies:
        scope = f"{bucket}/{prefix}" if prefix else bucket
        out = sc.store.admin("tier", "remove", scope)
        assert out.get("rehydrating") is True, out
    assert sc.store.admin("tier", "list")["policies"] == []

    st = sc.wait_stable(lambda st: st["remote_bytes"] == 0 and st["remote_blobs"] == 0, "rehydration", timeout=120)
    assert st["rehydrated_bytes"] == remote, (remote, st)
    now = blob_files(sc.blobs)
    assert sum(now.values()) == local_before + remote, (local_before, remote, sum(now.values()))
    missing = set(sc.blobs_before) - set(now)
    assert not missing, f"{len(missing)} original blob files did not come back: {sorted(missing)[:5]}"
    assert all(o.sha in now for o in sc.bulk.values()), "a bulk blob did not come back"

    sc.minio.stop()
    start_off = s.log_path.stat().st_size
    try:
        for k, o in sorted(sc.objects.items()):
            sc.same_bytes(BUCKET, f"{REPO}/{k}", o, "rehydrated, MinIO down")
        for k, o in sorted(sc.bulk.items()):
            sc.same_bytes(BULK, k, o, "rehydrated, MinIO down")
        for (bucket, k), o in sc.extra.items():
            sc.same_bytes(bucket, k, o, "rehydrated, MinIO down")
    finally:
        sc.down_windows.append((start_off, start_off))  # no 503 allowed here
        sc.minio.start()
    sc.done.add("removed")


# -- step 8 -------------------------------------------------------------------------


@with_logs
def test_bad_input(scenario: Scenario):
    """Step 8: one-line errors and exit 1; no policy appears; versioning and target removal refused."""
    from botocore.exceptions import ClientError

    sc, s = scenario, scenario.store
    sc.require("setup")
    before = s.admin("tier", "list")["policies"]
    for name in ("versioned", "plain"):
        sc.s3.create_bucket(Bucket=name)
    sc.s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    narrow = s.admin("replication", "add", "narrow", "--endpoint", sc.minio.endpoint, "--bucket", MINIO_BUCKET,
                     "--prefix", "narrow/", "--region", sc.minio.region, "--source", f"{BUCKET}/only-here/",
                     "--credentials-file", str(sc.minio.credentials_file(sc.dir / "minio.cred")))
    assert narrow.get("probe") == "ok", narrow
    try:
        cases = {
            "unknown target": (BULK, "--target", "no-such-target", "--after", "0s"),
            "target not covering the bucket": (BULK, "--target", "narrow", "--after", "0s"),
            "target not covering the prefix": (f"{BUCKET}/spilo/", "--target", "narrow", "--after", "0s"),
            "bad duration": (BULK, "--target", TARGET, "--after", "soon"),
            "missing bucket": ("no-such-bucket", "--target", TARGET, "--after", "0s"),
            "versioned bucket": ("versioned", "--target", TARGET, "--after", "0s"),
        }
        for what, args in cases.items():
            line = one_line_error(s.admin("tier", "set", *args, check=False), what)
            print(f"{what}: {line}")
        assert s.admin("tier", "list")["policies"] == before

        # A bucket with a tier policy cannot enable versioning; its target cannot be removed.
        s.admin("tier", "set", "plain", "--target", TARGET, "--after", "7d")
        with pytest.raises(ClientError) as e:
            sc.s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Enabled"})
        assert 400 <= e.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500, e.value.response
        assert sc.s3.get_bucket_versioning(Bucket="plain").get("Status") != "Enabled"
        one_line_error(s.admin("replication", "remove", TARGET, check=False), "removing the target of a policy")
        assert TARGET in {t["name"] for t in s.admin("replication", "list")["targets"]}
        s.admin("tier", "remove", "plain")
    finally:
        s.admin("replication", "remove", "narrow", check=False)
    assert s.admin("tier", "list")["policies"] == before


# -- step 9 -------------------------------------------------------------------------


def test_no_5xx_but_the_expected_503s(scenario: Scenario):
    """Step 9: no request failed with 5xx, except tiered GETs answered 503 while MinIO was down."""
    sc = scenario
    sc.require("setup")
    raw = sc.store.log_path.read_bytes()
    unexpected, expected = [], 0
    pos = 0
    for line in raw.splitlines(keepends=True):
        at, pos = pos, pos + len(line)
        text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode(errors="replace"))
        if not re.search(r"status=5\d\d", text):
            continue
        in_window = any(a <= at < b for a, b in sc.down_windows)
        if in_window and "status=503" in text and 'op="GetObject"' in text and f"/{BUCKET}/{REPO}/" in text:
            expected += 1
        else:
            unexpected.append(text.strip())
    assert not unexpected, f"{len(unexpected)} requests answered 5xx, e.g.:\n" + "\n".join(unexpected[:10])
    if "down" in sc.done:
        assert expected >= 3, f"the 503s of step 6 are not in the log ({expected})"


# -- the scrub of the target's copies ------------------------------------------------


def test_scrub_finds_copies_missing_or_changed_on_the_target(workdir, minio):
    """A walstore of its own (scrubbing every second, full reads): three evicted objects; on
    MinIO one copy is deleted, one replaced by another version, one carries another SHA-256 in
    its metadata, and one other bytes under the same metadata (only a full read sees that).
    The scrub names all four, `walstore_tier_scrub_problems` says 4, and reads of them never
    return wrong bytes while the intact one reads fine."""
    from harness import rmtree
    d = workdir / "scrub"
    if d.exists():
        rmtree(d)
    d.mkdir()
    s = Walstore(d / "data", buckets=["scrubbed"], region=REGION,
                 extra_args=["--tier-interval", "1s", "--tier-scrub-interval", "2s", "--tier-scrub-full", "on"])
    s.start()
    try:
        prefix = "scrub-test/"
        added = s.admin("replication", "add", "copy", "--endpoint", minio.endpoint, "--bucket", MINIO_BUCKET,
                        "--prefix", prefix, "--region", minio.region, "--credentials-file",
                        str(minio.credentials_file(d / "minio.cred")), "--source", "scrubbed")
        assert added.get("probe") == "ok", added
        s3 = s3_client(s.boto3_kwargs())
        bodies = {k: os.urandom(300_000 + i) for i, k in enumerate(["intact", "gone", "other", "relabelled", "forged"])}
        for k, b in bodies.items():
            s3.put_object(Bucket="scrubbed", Key=k, Body=b)
        s.admin("tier", "set", "scrubbed", "--target", "copy", "--after", "0s")
        wait_for(lambda: s.admin("tier", "status")["remote_blobs"] == 5, timeout=60, interval=0.5,
                 what="all five objects evicted")
        m3 = s3_client(minio.boto3_kwargs())
        key = lambda k: f"{prefix}scrubbed/{k}"  # noqa: E731
        m3.delete_object(Bucket=MINIO_BUCKET, Key=key("gone"))
        m3.put_object(Bucket=MINIO_BUCKET, Key=key("other"), Body=b"a newer version")
        relabelled = m3.head_object(Bucket=MINIO_BUCKET, Key=key("relabelled"))["Metadata"]
        m3.put_object(Bucket=MINIO_BUCKET, Key=key("relabelled"), Body=bodies["relabelled"],
                      Metadata={**relabelled, "walstore-sha256": "0" * 64})
        forged = m3.head_object(Bucket=MINIO_BUCKET, Key=key("forged"))["Metadata"]
        bad = bytearray(bodies["forged"])
        bad[1000] ^= 0xFF
        m3.put_object(Bucket=MINIO_BUCKET, Key=key("forged"), Body=bytes(bad), Metadata=forged)

        def found() -> dict | None:
            st = s.admin("tier", "status")
            return st if len(st["scrub"]["problems"]) == 4 else None
        st = wait_for(found, timeout=60, interval=1, what="the scrub to report four problems")
        text = "\n".join(st["scrub"]["problems"])
        for k in ("gone", "other", "relabelled", "forged"):
            assert f"scrubbed/{k}" in text, text
        assert "scrubbed/intact" not in text, text
        _, metrics = s.get("/metrics")
        assert re.search(r"^walstore_tier_scrub_problems 4$", metrics.decode(), re.M), metrics.decode()[-3000:]

        import boto3
        from botocore.config import Config
        once = boto3.client("s3", **s.boto3_kwargs(),
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        assert once.get_object(Bucket="scrubbed", Key="intact")["Body"].read() == bodies["intact"]
        for k in ("gone", "other", "relabelled", "forged"):
            try:
                got = once.get_object(Bucket="scrubbed", Key=k)["Body"].read()
            except Exception:  # refused (500) or cut mid-body: never the wrong bytes
                continue
            assert got == bodies[k], f"{k}: wrong bytes served"
    finally:
        assert s.stop() == 0


def test_rehydrate_on_read_keeps_what_reads_touch_within_the_cache(workdir, minio):
    """`--rehydrate-on-read` with `--tier-cache 500KB`: a read of an evicted 300 KB object brings
    it back to local disk, where it stays; reading a second one brings that back too, and the
    least recently brought back goes to the target again (the budget holds one)."""
    from harness import rmtree
    d = workdir / "cache"
    if d.exists():
        rmtree(d)
    d.mkdir()
    s = Walstore(d / "data", buckets=["cached"], region=REGION,
                 extra_args=["--tier-interval", "1s", "--tier-cache", "500KB"])
    s.start()
    try:
        added = s.admin("replication", "add", "copy", "--endpoint", minio.endpoint, "--bucket", MINIO_BUCKET,
                        "--prefix", "cache-test/", "--region", minio.region, "--credentials-file",
                        str(minio.credentials_file(d / "minio.cred")), "--source", "cached")
        assert added.get("probe") == "ok", added
        s3 = s3_client(s.boto3_kwargs())
        bodies = {k: os.urandom(300_000) for k in ("first", "second")}
        for k, b in bodies.items():
            s3.put_object(Bucket="cached", Key=k, Body=b)
        out = s.admin("tier", "set", "cached", "--target", "copy", "--after", "0s", "--rehydrate-on-read")
        assert out.get("rehydrate-on-read") is True, out
        wait_for(lambda: s.admin("tier", "status")["remote_blobs"] == 2, timeout=60, interval=0.5,
                 what="both objects evicted")
        sha = {k: hashlib.sha256(b).hexdigest() for k, b in bodies.items()}
        blobs = s.data_dir / "blobs"

        assert s3.get_object(Bucket="cached", Key="first")["Body"].read() == bodies["first"]
        wait_for(lambda: blob_path(blobs, sha["first"]).exists(), timeout=30, interval=0.2,
                 what="the object read to be brought back")
        time.sleep(3)  # a few passes: it stays local (cached), the other stays evicted
        assert blob_path(blobs, sha["first"]).exists() and not blob_path(blobs, sha["second"]).exists()

        assert s3.get_object(Bucket="cached", Key="second")["Body"].read() == bodies["second"]
        wait_for(lambda: blob_path(blobs, sha["second"]).exists() and not blob_path(blobs, sha["first"]).exists(),
                 timeout=30, interval=0.2, what="the second brought back and the first evicted again (budget)")
        st = s.admin("tier", "status")
        assert st["rehydrated_bytes"] >= 600_000 and st["remote_blobs"] == 1, st
        for k, b in bodies.items():
            assert s3.get_object(Bucket="cached", Key=k)["Body"].read() == b, k
    finally:
        assert s.stop() == 0
