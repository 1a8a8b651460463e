"""WAL-G v3.0.9 + PostgreSQL 15 against walstore, the way Spilo/Patroni uses it.

The scenario of walg-s3-protocol.md §11, every step asserted on what the
client and the database can observe:

1. ``archive_command = 'envdir ENV wal-g wal-push %p'`` archives real segments
   (byte-exact round trip through ``wal-fetch``);
2. a full ``backup-push``, a delta on top of it, ``backup-list --detail --json``,
   ``backup-mark`` (permanent);
3. point-in-time recovery (``recovery_target_time``) from LATEST and from the
   full backup by name, row count exact;
4. ``wal-verify integrity timeline`` both OK;
7. a standby restored from the archive is promoted, archives timeline 2
   (history + ``.partial``), backs up; a restore of the timeline-1 backup with
   ``recovery_target_timeline = 'latest'`` reaches the timeline-2 data;
5. ``delete retain FULL 1``, ``delete garbage``, ``delete everything FORCE``
   leave exactly what WAL-G's rules say, finally nothing under the prefix;
6. push/fetch variants: lz4/zstd/brotli/none, no ``AWS_REGION`` (us-east-1
   scope), ``WALG_S3_SSE=AES256`` (Spilo's default), ``WALG_PREVENT_WAL_OVERWRITE``
   (identical re-push succeeds, different bytes are refused), 5 MiB multipart parts.

Steps 1–5 and 7 share one primary cluster and one walstore (module fixtures)
and run in file order (7 before 5, which deletes everything); a step whose
prerequisite failed is skipped, not failed again. Each variant of step 6 has
its own cluster and prefix. The last test fails if walstore answered any
request with a 5xx (WAL-G would have retried it silently).
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_walg.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs for a post-mortem).
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import time

import pytest

from harness import Walstore, wait_for
from pgcluster import Cluster, Sandbox, print_log_tails, read_log, walg_sandbox, walstore_in

BUCKET = "backups"
REGION = "de01"
WAL_SEGMENT_SIZE = 16 * 1024 * 1024
PART_SIZE = 5 * 1024 * 1024

KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
_TESTS_RUN = 0  # WAL-G tests that passed or failed, not skipped (see test_server_answered_no_5xx)


def with_logs(fn):
    """On failure, print the tails of the PostgreSQL and walstore logs (shown by pytest)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _TESTS_RUN
        try:
            result = fn(*args, **kwargs)
            _TESTS_RUN += 1
            return result
        except Exception:
            _TESTS_RUN += 1
            print_log_tails(failed_requests=True)
            raise

    return wrapper


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    """One walstore (region de01, bucket `backups`) logging one line per request.

    Delete protection is `allow` here: this suite checks that WAL-G's own
    `delete` commands remove exactly what WAL-G intends (plain S3 semantics).
    The default, `protect-required`, is exercised by test_walg_retention.py.
    """
    yield from walstore_in(sandbox, "walstore-walg-", KEEP, region=REGION, buckets=[BUCKET],
                           extra_args=("--delete-protection", "allow"))


@pytest.fixture(scope="module")
def s3(store):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region,
                        aws_access_key_id=store.access_key, aws_secret_access_key=store.secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def walg_settings(store: Walstore, cluster: str, **overrides: str | None) -> dict[str, str]:
    """WAL-G's variables exactly as Spilo writes them to its envdir (None drops one)."""
    env = {
        "AWS_ENDPOINT": store.endpoint,
        "AWS_REGION": REGION,
        "AWS_S3_FORCE_PATH_STYLE": "true",
        "WALG_DISABLE_S3_SSE": "true",
        "WALG_S3_PREFIX": f"s3://{BUCKET}/spilo/{cluster}/wal/15",
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
    }
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def key_prefix(cluster: str) -> str:
    return f"spilo/{cluster}/wal/15/"


def list_keys(s3, prefix: str) -> dict[str, dict]:
    """Every object under `prefix` (ListObjectsV2, all pages) by key."""
    out: dict[str, dict] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def archive_settings(envdir) -> dict[str, str | int]:
    return {
        "archive_mode": "on",
        "archive_command": f"envdir {envdir} wal-g wal-push %p",
        "archive_timeout": "1s",
        # Keeps recently archived segments in pg_wal so tests can compare bytes / re-push them.
        "wal_keep_size": "128MB",
    }


def restore_settings(envdir) -> dict[str, str]:
    return {"archive_mode": "off", "restore_command": f"envdir {envdir} wal-g wal-fetch %f %p"}


def segment_name(timeline: int, segno: int) -> str:
    return f"{timeline:08X}{segno >> 8:08X}{segno & 0xFF:08X}"


def segment_of(lsn: int) -> int:
    return lsn // WAL_SEGMENT_SIZE


def wal_position(key: str) -> tuple[int, int] | None:
    """(timeline, segment number) from the first 24-hex name in a wal_005 key, as WAL-G orders them."""
    m = re.search(r"wal_005/([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})", key)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16) * 256 + int(m.group(3), 16)


def backup_list(sb: Sandbox, envdir) -> list[dict]:
    cp = sb.walg(envdir, "backup-list", "--detail", "--json")
    out = cp.stdout.strip()
    return json.loads(out) if out else []


def backup_push(sb: Sandbox, envdir, cluster: Cluster, **env: str) -> str:
    """Runs backup-push and returns the name of the one new backup."""
    before = {b["backup_name"] for b in backup_list(sb, envdir)}
    sb.walg(envdir, "backup-push", str(cluster.data), env={**cluster.pg_env, **env})
    new = [b["backup_name"] for b in backup_list(sb, envdir) if b["backup_name"] not in before]
    assert len(new) == 1, f"backup-push should add exactly one backup, backup-list shows new {new}"
    return new[0]


def restore(sb: Sandbox, envdir, backup: str, name: str, **settings: str) -> Cluster:
    """backup-fetch `backup` into a new cluster and configure archive recovery (not started).

    ``hot_standby='on'`` in `settings` makes it a standby, otherwise it recovers
    and promotes. Archiving is off unless `settings` turn it on.
    """
    c = Cluster(sb, name)
    c.make_empty_data_dir()
    sb.walg(envdir, "backup-fetch", str(c.data), backup)
    assert (c.data / "PG_VERSION").read_text().strip() == "15", "backup-fetch did not restore a PG 15 data dir"
    assert (c.data / "global" / "pg_control").is_file(), "backup-fetch did not restore pg_control"
    c.configure(**{**c.base_settings(), **restore_settings(envdir), **settings})
    c.touch("standby.signal" if settings.get("hot_standby") == "on" else "recovery.signal")
    return c


class Scenario:
    """State shared by the steps on the `main` cluster (steps 1-5, 7)."""

    def __init__(self, sb: Sandbox, store: Walstore, s3) -> None:
        self.sb, self.store, self.s3 = sb, store, s3
        self.cluster_name = "main"
        self.prefix = key_prefix(self.cluster_name)
        self.env = sb.envdir("main", walg_settings(store, self.cluster_name))
        self.primary = Cluster(sb, "primary")
        self.clusters: list[Cluster] = [self.primary]
        self.done: set[str] = set()
        self.backups: dict[str, str] = {}
        self.early_segments: list[str] = []
        self._pitr: tuple[int, str] | None = None

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def walg(self, *args: str, **kw):
        return self.sb.walg(self.env, *args, **kw)

    def pitr_point(self) -> tuple[int, str]:
        """Commits rows, records (row count, clock_timestamp()) and commits more rows after it.

        The later rows' WAL is archived too, so a restore that ignored the
        target time would see more rows than recorded.
        """
        if self._pitr is None:
            p = self.primary
            p.sql("CREATE TABLE pitr (id serial PRIMARY KEY, batch int NOT NULL, at timestamptz DEFAULT clock_timestamp())")
            p.sql("INSERT INTO pitr (batch) SELECT 1 FROM generate_series(1, 1234)")
            count = int(p.sql("SELECT count(*) FROM pitr"))
            at = p.sql("SELECT clock_timestamp()")
            time.sleep(0.2)
            p.sql("INSERT INTO pitr (batch) SELECT 2 FROM generate_series(1, 567)")
            assert int(p.sql("SELECT count(*) FROM pitr")) == count + 567
            p.switch_and_wait()
            self._pitr = (count, at)
        return self._pitr


@pytest.fixture(scope="module")
def scenario(sandbox, store, s3):
    sc = Scenario(sandbox, store, s3)
    try:
        p = sc.primary.initdb()
        p.configure(**p.base_settings(), **archive_settings(sc.env))
        p.start()
        yield sc
    finally:
        for c in reversed(sc.clusters):
            c.destroy()


# -- steps 1-5 and 7 on one primary ---------------------------------------------------


@with_logs
def test_archive_command_pushes_segments(scenario: Scenario, walg):
    """Step 1: archive_command ships real segments; they come back byte for byte."""
    sc, p = scenario, scenario.primary
    p.pgbench_init(scale=1)
    for i in range(3):
        p.sql(f"CREATE TABLE step1_{i} AS SELECT g FROM generate_series(1, 1000) g")
        sc.early_segments.append(p.switch_and_wait())

    archived, failed, last = p.sql(
        "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver").split("|")
    assert int(archived) >= 3, f"pg_stat_archiver.archived_count = {archived}"
    assert int(failed) == 0, f"archive_command failed {failed} times (see the PostgreSQL log)"
    assert re.fullmatch(r"0{7}1[0-9A-F]{16}", last), f"last_archived_wal = {last!r}"

    keys = list_keys(sc.s3, sc.prefix + "wal_005/")
    for seg in sc.early_segments:
        assert f"{sc.prefix}wal_005/{seg}.lz4" in keys, f"{seg}.lz4 missing from the bucket: {sorted(keys)[-10:]}"
    last_seg = sc.early_segments[-1]
    head = sc.s3.head_object(Bucket=BUCKET, Key=f"{sc.prefix}wal_005/{last_seg}.lz4")
    assert head["ContentLength"] == keys[f"{sc.prefix}wal_005/{last_seg}.lz4"]["Size"] > 0

    # Round trip: wal-fetch the last archived segment and compare with pg_wal.
    out = sc.sb.mkdir("fetched") / last_seg
    sc.walg("wal-fetch", last_seg, str(out))
    assert out.read_bytes() == (p.data / "pg_wal" / last_seg).read_bytes(), "wal-fetch returned other bytes"
    # A segment that was never archived is a clean "not found": exit 74 (EX_IOERR), which
    # PostgreSQL's restore_command protocol treats as "no such file".
    missing = sc.walg("wal-fetch", "0000000100000000000000FE", str(out.parent / "missing"), check=False)
    assert missing.returncode == 74, f"wal-fetch of a missing segment: exit {missing.returncode}\n{missing.stderr}"
    sc.done.add("archive")


@with_logs
def test_full_and_delta_backup_list_and_mark(scenario: Scenario, walg):
    """Step 2: backup-push (full), a delta on top, backup-list --detail --json, backup-mark."""
    sc, p = scenario, scenario.primary
    sc.require("archive")
    full = backup_push(sc.sb, sc.env, p)
    assert re.fullmatch(r"base_0{7}1[0-9A-F]{16}", full), f"full backup name {full!r}"

    p.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 20 = 0")
    p.sql("CREATE TABLE after_full AS SELECT g FROM generate_series(1, 5000) g")
    p.switch_and_wait()
    delta = backup_push(sc.sb, sc.env, p, WALG_DELTA_MAX_STEPS="1")
    assert re.fullmatch(rf"base_0{{7}}1[0-9A-F]{{16}}_D_{full[5:]}", delta), \
        f"second backup {delta!r} is not a delta of {full!r}"
    sc.backups.update(full=full, delta=delta)

    listed = {b["backup_name"]: b for b in backup_list(sc.sb, sc.env)}
    assert set(listed) == {full, delta}, f"backup-list shows {sorted(listed)}"
    sentinel = json.loads(sc.s3.get_object(
        Bucket=BUCKET, Key=f"{sc.prefix}basebackups_005/{delta}_backup_stop_sentinel.json")["Body"].read())
    assert sentinel.get("DeltaFrom") == full and sentinel.get("DeltaFullName") == full, sentinel
    assert listed[delta]["compressed_size"] < listed[full]["compressed_size"], \
        "the delta should be smaller than the full backup it is based on"
    assert listed[full]["start_lsn"] < listed[full]["finish_lsn"] <= listed[delta]["start_lsn"]
    assert not listed[full]["is_permanent"] and not listed[delta]["is_permanent"]

    sc.walg("backup-mark", full)
    listed = {b["backup_name"]: b for b in backup_list(sc.sb, sc.env)}
    assert listed[full]["is_permanent"] is True, listed[full]
    assert listed[delta]["is_permanent"] is False, listed[delta]
    meta = json.loads(sc.s3.get_object(Bucket=BUCKET, Key=f"{sc.prefix}basebackups_005/{full}/metadata.json")["Body"].read())
    assert meta["is_permanent"] is True
    sc.backups.update(full_start_lsn=listed[full]["start_lsn"], full_finish_lsn=listed[full]["finish_lsn"])
    sc.done.add("backups")


@pytest.mark.parametrize("which", ["LATEST", "full-by-name"])
@with_logs
def test_point_in_time_restore(scenario: Scenario, walg, which):
    """Step 3: backup-fetch + wal-fetch recovery to a recorded time gives exactly the rows of that time."""
    sc = scenario
    sc.require("backups")
    count, at = sc.pitr_point()
    backup = "LATEST" if which == "LATEST" else sc.backups["full"]
    r = restore(sc.sb, sc.env, backup, f"pitr-{which}", recovery_target_time=at, recovery_target_action="promote")
    try:
        r.start()
        r.wait_promoted()
        got = int(r.sql("SELECT count(*) FROM pitr"))
        assert got == count, f"restored {got} rows, expected exactly {count} (recovery_target_time {at})"
        assert r.sql("SELECT count(*) FROM pgbench_accounts") == "100000"
        assert "recovery stopping before commit" in read_log(r.log), "recovery did not stop at the target time"
        assert r.timeline() == 2, "a promoted PITR restore starts timeline 2"
    finally:
        r.destroy()
    sc.done.add(f"pitr-{which}")


@with_logs
def test_wal_verify_integrity_and_timeline(scenario: Scenario, walg):
    """Step 4: wal-verify integrity timeline --json: both OK, every segment FOUND."""
    sc, p = scenario, scenario.primary
    sc.require("backups")
    result: dict = {}
    for _ in range(3):
        # The current segment counts as "uploading" until it is archived: switch first.
        p.switch_and_wait()
        cp = sc.walg("wal-verify", "integrity", "timeline", "--json", env=p.pg_env)
        result = json.loads(cp.stdout.strip().splitlines()[-1])
        if result["integrity"]["status"] == "OK" and result["timeline"]["status"] == "OK":
            break
        time.sleep(1)
    assert result["timeline"]["status"] == "OK", result["timeline"]
    assert result["integrity"]["status"] == "OK", result["integrity"]
    details = result["integrity"]["details"]
    assert details and all(d["status"] == "FOUND" for d in details), details
    # The scan reaches back to the earliest non-permanent backup (the delta).
    start = min(d["start_segment"] for d in details)
    assert start <= sc.backups["delta"][5:29], (start, sc.backups["delta"])
    sc.done.add("wal-verify")


@with_logs
def test_promoted_standby_archives_timeline_2(scenario: Scenario, walg):
    """Step 7: standby from the archive -> promote -> timeline 2 archived -> restore follows it.

    Like a Patroni replica, the standby restores from the archive and then
    streams from the primary: PostgreSQL only archives the old timeline's last
    segment as `.partial` when that segment came by streaming (restored
    segments are already marked done).
    """
    sc, p = scenario, scenario.primary
    sc.require("backups")
    p.sql("CREATE TABLE tl_marks (id int PRIMARY KEY, note text NOT NULL)")

    standby = restore(sc.sb, sc.env, "LATEST", "standby", hot_standby="on",
                      primary_conninfo=f"host={p.dir} port={p.PORT} user=postgres application_name=standby",
                      **archive_settings(sc.env))
    sc.clusters.append(standby)
    standby.start()
    assert standby.in_recovery() is True
    assert re.search(r'restored log file "0{7}1[0-9A-F]{16}" from archive', read_log(standby.log)), \
        "the standby did not restore WAL from the archive"
    wait_for(lambda: standby.try_sql("SELECT status FROM pg_stat_wal_receiver") == "streaming",
             timeout=60, interval=0.3, what="the standby to stream from the primary")
    p.sql("INSERT INTO tl_marks VALUES (1, 'before promotion')")
    wait_for(lambda: standby.try_sql("SELECT note FROM tl_marks WHERE id = 1") == "before promotion",
             timeout=60, interval=0.3, what="the standby to replay the row")

    standby.promote()
    standby.wait_promoted()
    first_tl2 = standby.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    assert first_tl2.startswith("00000002"), first_tl2
    partial = f"00000001{first_tl2[8:]}.partial.lz4"
    standby.sql("INSERT INTO tl_marks VALUES (2, 'after promotion')")
    seg = standby.switch_and_wait()
    assert seg.startswith("00000002"), seg

    def timeline_2_archived() -> bool:
        names = {k.rsplit("/", 1)[1] for k in list_keys(sc.s3, sc.prefix + "wal_005/")}
        return {"00000002.history.lz4", partial, f"{seg}.lz4"} <= names
    wait_for(timeline_2_archived, timeout=60, interval=0.5, what=f"00000002.history.lz4 and {partial} in wal_005/")
    history = sc.sb.mkdir("history") / "00000002.history"
    sc.walg("wal-fetch", "00000002.history", str(history))
    assert re.match(r"1\t[0-9A-F]+/[0-9A-F]+\t", history.read_text()), history.read_text()

    tl2 = backup_push(sc.sb, sc.env, standby)
    assert tl2.startswith("base_00000002"), tl2
    sc.backups["tl2"] = tl2

    r = restore(sc.sb, sc.env, sc.backups["full"], "follow-tl2", recovery_target_timeline="latest")
    try:
        r.start()
        r.wait_promoted()
        notes = r.sql("SELECT string_agg(note, ',' ORDER BY id) FROM tl_marks")
        assert notes == "before promotion,after promotion", f"restore from the timeline-1 backup saw {notes!r}"
        assert r.timeline() == 3, "recovery should have followed timeline 2 and then chosen timeline 3"
    finally:
        r.destroy()
    sc.done.add("timeline")


@with_logs
def test_retention_garbage_and_delete_everything(scenario: Scenario, walg):
    """Step 5: delete retain FULL 1 / garbage / everything [FORCE] delete exactly what WAL-G intends."""
    sc, s3 = scenario, scenario.s3
    sc.require("backups")
    full, delta = sc.backups["full"], sc.backups["delta"]
    newest_full = sc.backups.get("tl2", full)
    survivors = {full, newest_full} if newest_full != full else {full, delta}
    outside = "spilo/unrelated/wal/15/wal_005/000000010000000000000001.lz4"
    s3.put_object(Bucket=BUCKET, Key=outside, Body=b"not WAL-G's business")

    before = list_keys(s3, sc.prefix)
    sc.walg("delete", "retain", "FULL", "1", "--confirm")
    after = list_keys(s3, sc.prefix)
    assert {b["backup_name"] for b in backup_list(sc.sb, sc.env)} == survivors
    target_pos = wal_position(f"wal_005/{newest_full[5:29]}")
    # The permanent full backup keeps the WAL from its start to its finish segment.
    permanent_wal = {segment_name(1, n) for n in range(segment_of(sc.backups["full_start_lsn"] - 1),
                                                        segment_of(sc.backups["full_finish_lsn"] - 1) + 1)}
    for key in after:
        pos = wal_position(key)
        if key.startswith(sc.prefix + "wal_005/") and pos is not None and pos < target_pos:
            assert key.split("/")[-1][:24] in permanent_wal, f"retain left WAL older than {newest_full}: {key}"
        m = re.match(re.escape(sc.prefix) + r"basebackups_005/(base_[0-9A-F]{24}(?:_D_[0-9A-F]{24})?)", key)
        assert m and m.group(1) in survivors or not m, f"retain left an object of a deleted backup: {key}"
    for seg in permanent_wal:
        assert f"{sc.prefix}wal_005/{seg}.lz4" in after, f"permanent WAL {seg} was deleted"
    gone = set(before) - set(after)
    for seg in sc.early_segments:
        assert f"{sc.prefix}wal_005/{seg}.lz4" in gone, f"old WAL {seg} survived retain"
    if newest_full != full:
        assert any(k.startswith(f"{sc.prefix}basebackups_005/{delta}") for k in gone)

    # A failed backup's leftovers (no sentinel) older than every backup: garbage.
    leftover = f"{sc.prefix}basebackups_005/base_000000010000000000000001/tar_partitions/part_001.tar.lz4"
    assert "000000010000000000000001" not in permanent_wal
    s3.put_object(Bucket=BUCKET, Key=leftover, Body=b"x" * 1000)
    sc.walg("delete", "garbage", "--confirm")
    remaining = list_keys(s3, sc.prefix)
    assert leftover not in remaining, "delete garbage left a sentinel-less backup folder"
    assert {b["backup_name"] for b in backup_list(sc.sb, sc.env)} == survivors

    refused = sc.walg("delete", "everything", "--confirm", check=False)
    assert refused.returncode != 0, "delete everything without FORCE must refuse while a permanent backup exists"
    # The promoted standby still archives (archive_timeout), so new segments may
    # appear meanwhile; none of the objects that were there may be gone.
    gone = set(remaining) - set(list_keys(s3, sc.prefix))
    assert not gone, f"the refused delete removed objects: {sorted(gone)[:10]}"

    # Nothing may archive into the prefix any more.
    for c in reversed(sc.clusters):
        c.stop()
    sc.walg("delete", "everything", "FORCE", "--confirm")
    left = list_keys(s3, sc.prefix)
    assert not left, f"delete everything FORCE left {len(left)} objects, e.g. {sorted(left)[:10]}"
    page = s3.list_objects_v2(Bucket=BUCKET, Prefix=sc.prefix, Delimiter="/")
    assert page.get("KeyCount", 0) == 0 and not page.get("CommonPrefixes"), page
    assert outside in list_keys(s3, "spilo/unrelated/"), "delete everything reached outside its prefix"
    s3.delete_object(Bucket=BUCKET, Key=outside)
    sc.done.add("delete")


# -- step 6: push/fetch variants, each with its own cluster and prefix -------------------

VARIANTS = {
    # name: (settings overrides, suffix of the objects ("" for none), big data for multipart)
    "lz4": ({"WALG_COMPRESSION_METHOD": "lz4"}, ".lz4", False),
    "zstd": ({"WALG_COMPRESSION_METHOD": "zstd"}, ".zst", False),
    "brotli": ({"WALG_COMPRESSION_METHOD": "brotli"}, ".br", False),
    # Bare names; 16 MiB single-part PUTs; wal-fetch probes `<name>.` before the bare name.
    "none": ({"WALG_COMPRESSION_METHOD": "none"}, "", False),
    "no-region": ({"AWS_REGION": None}, ".lz4", False),
    # What Spilo sends unless WALG_DISABLE_S3_SSE is set.
    "sse-aes256": ({"WALG_DISABLE_S3_SSE": None, "WALG_S3_SSE": "AES256"}, ".lz4", False),
    "prevent-overwrite": ({"WALG_PREVENT_WAL_OVERWRITE": "true"}, ".lz4", False),
    "multipart-5MiB": ({"WALG_S3_MAX_PART_SIZE": str(PART_SIZE)}, ".lz4", True),
}


@pytest.fixture
def clusters(sandbox):
    made: list[Cluster] = []
    yield made
    for c in reversed(made):
        c.destroy()


def _fill(c: Cluster, first: int, rows: int) -> None:
    """Rows of 1 KiB random bytes (incompressible: the big variant needs a large tar)."""
    c.sql(f"INSERT INTO t SELECT g, decode(string_agg(md5(random()::text || g || i), ''), 'hex') "
          f"FROM generate_series({first}, {first + rows - 1}) g, generate_series(1, 64) i GROUP BY g")


def _digest(c: Cluster) -> str:
    return c.sql("SELECT count(*) || ':' || md5(string_agg(md5(payload), '' ORDER BY id)) FROM t")


@pytest.mark.parametrize("variant", list(VARIANTS))
@with_logs
def test_push_fetch_variant(sandbox, store, s3, clusters, walg, variant):
    """Step 6: archive, backup-push, backup-fetch + wal-fetch recovery, per client setting."""
    overrides, suffix, big = VARIANTS[variant]
    sb = sandbox
    name = f"variant-{variant}"
    prefix = key_prefix(name)
    env = sb.envdir(name, walg_settings(store, name, **overrides))
    p = Cluster(sb, f"v-{variant}")
    clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(env))
    p.start()

    p.sql("CREATE TABLE t (id int PRIMARY KEY, payload bytea NOT NULL)")
    _fill(p, 1, 24 * 1024 if big else 500)
    segs = [p.switch_and_wait()]
    _fill(p, 100_000, 100)
    segs.append(p.switch_and_wait())
    keys = list_keys(s3, prefix + "wal_005/")
    for seg in segs:
        assert f"{prefix}wal_005/{seg}{suffix}" in keys, f"{seg}{suffix} not archived: {sorted(keys)}"
    pattern = r"[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?" + re.escape(suffix)
    assert all(re.fullmatch(pattern, k.rsplit("/", 1)[1]) for k in keys), \
        f"WAL objects with another compression: {sorted(keys)}"

    backup = backup_push(sb, env, p)
    tars = list_keys(s3, f"{prefix}basebackups_005/{backup}/tar_partitions/")
    assert tars and all(k.endswith(f".tar{suffix}") for k in tars), sorted(tars)
    if big:
        key, obj = max(tars.items(), key=lambda kv: kv[1]["Size"])
        assert obj["Size"] > 3 * PART_SIZE, f"the biggest tar is only {obj['Size']} bytes: not multipart enough"
        etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
        m = re.fullmatch(r'"[0-9a-f]{32}-(\d+)"', etag)
        assert m, f"{key} (size {obj['Size']}) was not a multipart upload: ETag {etag}"
        assert int(m.group(1)) == math.ceil(obj["Size"] / PART_SIZE), (etag, obj["Size"])

    if variant == "no-region":
        # The server accepted every request although WAL-G signed them for another region.
        cp = sb.walg(env, "st", "ls", env={"S3_LOG_LEVEL": "DEVEL"})
        scopes = set(re.findall(r"Credential=[^/\s]+/\d{8}/([^/\s]+)/s3/aws4_request", cp.stdout + cp.stderr))
        assert scopes == {"us-east-1"}, f"WAL-G without AWS_REGION signed for {scopes or 'nothing logged'}"

    # Rows only the archived WAL after the backup holds.
    _fill(p, 200_000, 50)
    last = p.switch_and_wait()
    expected = _digest(p)

    if variant in ("prevent-overwrite", "lz4"):
        seg_path = p.data / "pg_wal" / last
        key = f"{prefix}wal_005/{last}{suffix}"
        etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
        sb.walg(env, "wal-push", str(seg_path))  # identical bytes: must succeed
        assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == etag
        if variant == "prevent-overwrite":
            other = sb.mkdir("tampered") / last
            data = bytearray(seg_path.read_bytes())
            data[-1] ^= 0xFF
            sb.write_file(other, bytes(data))
            cp = sb.walg(env, "wal-push", str(other), check=False)
            assert cp.returncode != 0, "WALG_PREVENT_WAL_OVERWRITE let different bytes overwrite an archived segment"
            assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == etag

    r = restore(sb, env, "LATEST", f"v-{variant}-restored")
    clusters.append(r)
    r.start()
    r.wait_promoted()
    assert _digest(r) == expected, "the restored cluster has other rows than the primary"
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0


def test_server_answered_no_5xx(store, sandbox):
    """WAL-G retries 5xx silently: the scenario passing is not enough, the server must not have failed."""
    if _TESTS_RUN == 0:
        pytest.skip("no WAL-G test ran in this session")
    log = read_log(store.log_path)
    requests = re.findall(r"\brequest\b.*\bstatus=\d{3}", log)
    assert requests, "walstore logged no requests (is --log-level info,s3api=debug honoured?)"
    errors = [ln for ln in log.splitlines() if re.search(r"status=5\d\d", ln)]
    assert not errors, f"{len(errors)} requests answered 5xx, e.g.:\n" + "\n".join(errors[:10])
