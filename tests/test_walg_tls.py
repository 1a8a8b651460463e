"""WAL-G v3.0.9 + PostgreSQL 15 against walstore over https, and the WAL metrics it produces.

A production walstore serves TLS itself (``serve --tls-cert/--tls-key``), and
WAL-G verifies it with ``WALG_S3_CA_CERT_FILE`` (aws-sdk-go's custom CA bundle:
only that CA is trusted). This module runs the Spilo-style round trip of
test_walg.py against such a server, with a CA made by the test (tlscerts.py),
and watches what an operator's Prometheus would see on ``GET /metrics`` (over
the same https port, with a bearer token):

1. without the CA setting WAL-G refuses the server (so verification is on and
   the setting is what makes the rest work);
2. ``archive_command = 'envdir ENV wal-g wal-push %p'`` archives segments; a
   ``wal-fetch`` returns them byte for byte;
3. ``backup-push`` and ``backup-list``;
4. after ``pg_switch_wal()`` and archiving, ``walstore_wal_last_segment_lsn_bytes``
   of the repository grows to the switched segment's end and
   ``..._received_timestamp_seconds`` is the time of that upload;
5. ``backup-fetch`` + ``wal-fetch`` (restore_command) recovery: the restored
   cluster starts and has every row, including rows only archived WAL holds;
6. last, because a missing segment breaks restores: one archived segment in the
   middle of the sequence is deleted (refused by default delete protection,
   then forced by the root key's ``x-walstore-retention-override``), and the
   next scrape reports it in ``walstore_wal_gap_segments``;
7. no request was answered 5xx.

Steps share one primary and one walstore (module fixtures) and run in file
order; a step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_walg_tls.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import functools
import os
import re
import secrets
import time

import pytest
from botocore.exceptions import ClientError

from harness import Walstore
from pgcluster import Cluster, Sandbox, print_log_tails, read_log, walg_sandbox, walstore_in
from test_walg import (
    BUCKET,
    REGION,
    WAL_SEGMENT_SIZE,
    archive_settings,
    backup_list,
    backup_push,
    key_prefix,
    list_keys,
    restore,
    wal_position,
    walg_settings,
)

CLUSTER = "tls"
PREFIX = key_prefix(CLUSTER)  # spilo/tls/wal/15/ — the `repo` label of the WAL metrics
KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
METRICS_TOKEN = secrets.token_urlsafe(18)

_TESTS_RUN = 0


def with_logs(fn):
    """On failure, print the tails of the PostgreSQL and walstore logs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _TESTS_RUN
        _TESTS_RUN += 1
        try:
            return fn(*args, **kwargs)
        except Exception:
            print_log_tails()
            raise

    return wrapper


# -- metrics ------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition: name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?", line.strip())
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


class Scrape:
    """One GET /metrics, read for this module's repository."""

    def __init__(self, store: Walstore) -> None:
        status, body = store.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert status == 200, f"GET /metrics: {status} {body[:300]!r}"
        self.samples = parse_metrics(body.decode())

    def value(self, name: str, **labels: str) -> float | None:
        want = {"bucket": BUCKET, "repo": PREFIX, **labels}
        found = [v for lab, v in self.samples.get(name, []) if all(lab.get(k) == x for k, x in want.items())]
        assert len(found) <= 1, f"{name}{want}: {len(found)} series"
        return found[0] if found else None

    @property
    def last_lsn(self) -> float | None:
        return self.value("walstore_wal_last_segment_lsn_bytes")

    @property
    def last_received(self) -> float | None:
        return self.value("walstore_wal_last_segment_received_timestamp_seconds")

    @property
    def gaps(self) -> dict[str, float | None]:
        return {st: self.value("walstore_wal_gap_segments", state=st) for st in ("pending", "lost")}

    @classmethod
    def until(cls, store: Walstore, done, within: float = 3.0) -> "Scrape":
        """Scrapes every 100 ms until `done(scrape)` holds or `within` seconds pass; returns the last.

        The WAL gauges come from the evaluate worker, which every write into a repository wakes
        (README, "Metrics"): they follow a write within about a second, never at once.
        """
        deadline = time.monotonic() + within
        while True:
            s = cls(store)
            if done(s) or time.monotonic() >= deadline:
                return s
            time.sleep(0.1)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    """walstore over https (default delete protection, /metrics behind a bearer token), one line per request."""
    yield from walstore_in(sandbox, "walstore-walg-tls-", KEEP, region=REGION, buckets=[BUCKET], tls=True,
                           extra_args=("--metrics-token", METRICS_TOKEN))


@pytest.fixture(scope="module")
def s3(store):
    """boto3 with the root key, verifying the server with the test CA."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", **store.boto3_kwargs(),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


class Scenario:
    """State shared by the steps."""

    def __init__(self, sb: Sandbox, store: Walstore, s3) -> None:
        self.sb, self.store, self.s3 = sb, store, s3
        # WAL-G runs as `postgres`: it gets its own copy of the CA certificate.
        self.ca = sb.write_file(sb.mkdir("tls") / "ca.crt", store.ca.read_bytes(), mode=0o644)
        self.settings = walg_settings(store, CLUSTER, WALG_S3_CA_CERT_FILE=str(self.ca))
        assert self.settings["AWS_ENDPOINT"].startswith("https://127.0.0.1:")
        self.env = sb.envdir(CLUSTER, self.settings)
        self.primary = Cluster(sb, "primary")
        self.clusters: list[Cluster] = [self.primary]
        self.done: set[str] = set()
        self.backup = ""
        self.rows = 0

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def walg(self, *args: str, **kw):
        return self.sb.walg(self.env, *args, **kw)

    def add_rows(self, n: int) -> None:
        self.primary.sql(f"INSERT INTO marks (note) SELECT 'row ' || g FROM generate_series(1, {n}) g")
        self.rows += n


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


# -- steps ----------------------------------------------------------------------------


@with_logs
def test_walg_refuses_the_server_without_the_ca(scenario: Scenario, walg):
    """Step 1: without WALG_S3_CA_CERT_FILE, WAL-G does not trust the test CA and fails."""
    sc = scenario
    untrusting = sc.sb.envdir("no-ca", {**{k: v for k, v in sc.settings.items() if k != "WALG_S3_CA_CERT_FILE"},
                                        "WALG_S3_MAX_RETRIES": "0"})
    cp = sc.sb.walg(untrusting, "backup-list", check=False, timeout=120)
    assert cp.returncode != 0, f"WAL-G listed backups without trusting the CA:\n{cp.stdout}\n{cp.stderr}"
    assert re.search(r"x509|certificate", cp.stderr), cp.stderr[-3000:]
    # With the CA: an empty repository, no error.
    assert backup_list(sc.sb, sc.env) == []
    sc.done.add("ca")


@with_logs
def test_archive_command_over_https(scenario: Scenario, walg):
    """Step 2: archive_command wal-push over https; wal-fetch returns the bytes."""
    sc, p = scenario, scenario.primary
    sc.require("ca")
    p.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text NOT NULL)")
    p.pgbench_init(scale=1)
    segs = []
    for _ in range(2):
        sc.add_rows(1000)
        segs.append(p.switch_and_wait())
    archived, failed = p.sql("SELECT archived_count, failed_count FROM pg_stat_archiver").split("|")
    assert int(archived) >= 2 and int(failed) == 0, f"pg_stat_archiver: archived {archived}, failed {failed}"
    keys = list_keys(sc.s3, PREFIX + "wal_005/")
    for seg in segs:
        assert f"{PREFIX}wal_005/{seg}.lz4" in keys, f"{seg}.lz4 missing: {sorted(keys)[-10:]}"
    out = sc.sb.mkdir("fetched") / segs[-1]
    sc.walg("wal-fetch", segs[-1], str(out))
    assert out.read_bytes() == (p.data / "pg_wal" / segs[-1]).read_bytes(), "wal-fetch returned other bytes"
    sc.done.add("archive")


@with_logs
def test_backup_push_and_list_over_https(scenario: Scenario, walg):
    """Step 3: a full backup-push; backup-list shows it, complete."""
    sc, p = scenario, scenario.primary
    sc.require("archive")
    sc.backup = backup_push(sc.sb, sc.env, p)
    assert re.fullmatch(r"base_0{7}1[0-9A-F]{16}", sc.backup), sc.backup
    listed = backup_list(sc.sb, sc.env)
    assert [b["backup_name"] for b in listed] == [sc.backup]
    assert listed[0]["start_lsn"] < listed[0]["finish_lsn"]
    assert list_keys(sc.s3, f"{PREFIX}basebackups_005/{sc.backup}_backup_stop_sentinel.json")
    sc.done.add("backup")


@with_logs
def test_wal_metrics_follow_archiving(scenario: Scenario, walg):
    """Step 4: a scrape right after a segment is archived reports it as the repository's newest."""
    sc, p = scenario, scenario.primary
    sc.require("backup")
    # The token is enforced over https too.
    status, _ = sc.store.get("/metrics")
    assert status == 401, f"GET /metrics without the bearer token answered {status}"

    before = Scrape.until(sc.store, lambda s: s.last_lsn is not None)
    assert before.last_lsn is not None, "no walstore_wal_last_segment_lsn_bytes for the repository after step 2"
    sc.add_rows(500)
    switched_at = time.time()
    seg = p.switch_and_wait()
    seg_end = (int(seg[8:16], 16) * 256 + int(seg[16:24], 16) + 1) * WAL_SEGMENT_SIZE
    after = Scrape.until(sc.store, lambda s: (s.last_lsn or 0) >= seg_end)
    assert after.last_lsn is not None and after.last_lsn > before.last_lsn, (before.last_lsn, after.last_lsn)
    # archive_timeout may have archived a later segment already, never an earlier one.
    assert after.last_lsn >= seg_end, f"newest segment ends at {after.last_lsn}, {seg} ends at {seg_end}"
    assert after.last_lsn % WAL_SEGMENT_SIZE == 0, after.last_lsn
    received = after.last_received
    assert received is not None and switched_at - 2 <= received <= time.time() + 2, \
        f"newest segment received at {received}, switched at {switched_at}"
    # (An upload still in flight may count as pending for a moment; nothing is lost.)
    assert after.gaps["lost"] == 0, after.gaps
    sc.done.add("metrics")


@with_logs
def test_restore_over_https(scenario: Scenario, walg):
    """Step 5: backup-fetch + wal-fetch recovery over https; the restored cluster has every row."""
    sc, p = scenario, scenario.primary
    sc.require("backup")
    sc.add_rows(777)  # only archived WAL holds these
    p.switch_and_wait()
    assert int(p.sql("SELECT count(*) FROM marks")) == sc.rows
    r = restore(sc.sb, sc.env, "LATEST", "restored")
    sc.clusters.append(r)
    try:
        r.start()
        r.wait_promoted()
        assert int(r.sql("SELECT count(*) FROM marks")) == sc.rows, "the restored cluster has other rows"
        assert r.sql("SELECT count(*) FROM pgbench_accounts") == "100000"
        assert re.search(r'restored log file "0{7}1[0-9A-F]{16}" from archive', read_log(r.log)), \
            "recovery did not wal-fetch from the archive"
    finally:
        r.destroy()
        sc.clusters.remove(r)
    sc.done.add("restore")


@with_logs
def test_deleted_segment_is_reported_as_a_gap(scenario: Scenario, walg):
    """Step 6 (last: it breaks restores): a segment deleted mid-sequence shows in walstore_wal_gap_segments."""
    sc, p, s3 = scenario, scenario.primary, scenario.s3
    sc.require("backup", "restore")
    for _ in range(2):  # at least three segments after the backup's start
        sc.add_rows(100)
        p.switch_and_wait()
    p.stop()  # nothing archives any more: the scrapes below see a settled repository

    start = wal_position(f"wal_005/{sc.backup[5:29]}")
    segs = sorted((wal_position(k), k) for k in list_keys(s3, PREFIX + "wal_005/")
                  if re.fullmatch(r"[0-9A-F]{24}\.lz4", k.rsplit("/", 1)[1]))
    after_backup = [k for pos, k in segs if pos > start]
    assert len(after_backup) >= 3, f"too few segments after {sc.backup}: {after_backup}"
    victim = after_backup[len(after_backup) // 2]
    assert victim != after_backup[-1]

    settled = {"pending": 0, "lost": 0}
    # Settled means the gauges have seen the newest segment too: the last ones may have been
    # archived while PostgreSQL stopped, and the evaluation follows writes within a second.
    newest_end = (segs[-1][0][1] + 1) * WAL_SEGMENT_SIZE
    before = Scrape.until(sc.store, lambda s: s.gaps == settled and s.last_lsn == newest_end)
    assert before.gaps == settled, f"gaps before any deletion: {before.gaps}"
    assert before.last_lsn == newest_end, f"newest segment {segs[-1][1]} not in the gauges: {before.last_lsn}"

    # Default delete protection refuses: the segment is young and the backup needs it.
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=BUCKET, Key=victim)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    s3.head_object(Bucket=BUCKET, Key=victim)

    def override(request, **_):
        request.headers["x-walstore-retention-override"] = "test: simulate a lost WAL segment"

    s3.meta.events.register("before-sign.s3.DeleteObject", override)
    try:
        assert s3.delete_object(Bucket=BUCKET, Key=victim)["ResponseMetadata"]["HTTPStatusCode"] == 204
    finally:
        s3.meta.events.unregister("before-sign.s3.DeleteObject", override)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key=victim)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    after = Scrape.until(sc.store, lambda s: (s.gaps["pending"] or 0) + (s.gaps["lost"] or 0) >= 1)
    missing = (after.gaps["pending"] or 0) + (after.gaps["lost"] or 0)
    assert missing >= 1, f"no gap reported after deleting {victim}: {after.gaps}"
    assert missing == 1, f"one segment deleted, {missing} reported missing: {after.gaps}"
    assert after.last_lsn == before.last_lsn, "deleting an older segment changed the newest segment"
    sc.done.add("gap")


def test_server_answered_no_5xx(store, sandbox):
    """WAL-G retries 5xx silently: the scenario passing is not enough, the server must not have failed."""
    if _TESTS_RUN == 0:
        pytest.skip("no WAL-G test ran in this session")
    log = read_log(store.log_path)
    assert re.search(r"\brequest\b.*\bstatus=\d{3}", log), "walstore logged no requests"
    errors = [ln for ln in log.splitlines() if re.search(r"status=5\d\d", ln)]
    assert not errors, f"{len(errors)} requests answered 5xx, e.g.:\n" + "\n".join(errors[:10])
