"""S3 versioning and Object Lock, proven with WAL-G v3.0.9 and PostgreSQL 15.

WAL-G (``S3_ENABLE_VERSIONING`` unset) asks GetBucketVersioning whether a bucket
is versioned; if so, ``wal-g delete`` lists with ListObjectVersions and deletes
every version by id. ``S3_RETENTION_PERIOD`` / ``S3_RETENTION_MODE`` make it
send ``x-amz-object-lock-mode`` / ``-retain-until-date`` with every PutObject
and CreateMultipartUpload. One walstore, delete protection ``allow`` (so the
lock alone is what keeps objects; ``protect-required`` is test_walg_retention.py's),
four buckets; steps in file order:

1. Bucket ``locked`` (CreateBucket with Object Lock): ``archive_command`` and
   ``backup-push`` with a COMPLIANCE retention of :data:`LOCK_SECONDS`; every
   stored version carries that retention (GetObjectRetention).
2. ``wal-g delete everything FORCE --confirm`` while the lock holds: WAL-G tries
   (ListObjectVersions + DeleteObjects reach the server), nothing is removed,
   every version stays readable, and a point-in-time restore still gives
   exactly the recorded rows.
3. Bucket ``plain`` (no Object Lock), same settings: ``wal-push`` and
   ``backup-push`` fail (400 InvalidRequest) and nothing is stored.
4. Bucket ``versioned`` (versioning Enabled, no lock, no retention settings):
   after backups and ``backup-mark`` (two versions of metadata.json),
   ``delete everything FORCE`` leaves no version and no delete marker.
5. Bucket ``attacked`` (versioning Enabled, no lock): a backup and archived WAL,
   then a time T; an attacker with a ``writer`` key (no administrator) deletes
   every object (delete markers) and overwrites/plants a few with garbage, so
   the bucket no longer restores. ``walstore asof create attacked/PREFIX --at T``
   gives a read-only view (writes 403, no versioning status) from which WAL-G's
   backup-fetch + wal-fetch recovery gives exactly the rows recorded before T.
6. Once the retention of step 1 has passed (bounded wait, which steps 3-5
   mostly fill), the same delete as in step 2 removes every version.
7. The server answered no request with 5xx.

A step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_walg_lock.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import subprocess
import time

import pytest

from harness import Walstore, walstore_exe
from pgcluster import Cluster, Sandbox, print_log_tails, read_log, walg_sandbox, walstore_in
from test_walg import (REGION, archive_settings, backup_list, backup_push, restore_settings, segment_name,
                       walg_settings)

KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
#: COMPLIANCE retention WAL-G asks for in step 1. Long enough for steps 1-2 to finish
#: well inside it on a slow machine; steps 3-4 run while it passes.
LOCK_SECONDS = 30
LOCKED, PLAIN, VERSIONED, ATTACKED = "locked", "plain", "versioned", "attacked"
PREFIX = "spilo/lock/wal/15/"  # the same repository path in each bucket


def with_logs(fn):
    """On failure, print the tails of the PostgreSQL and walstore logs (and failed requests)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            print_log_tails(failed_requests=True)
            raise

    return wrapper


def assert_everything_deleted(s3, bucket: str, cp, ops, total: int) -> None:
    """`wal-g delete everything FORCE` left no version, no delete marker, no key, and exited 0."""
    left, markers = list_versions(s3, bucket)
    assert not left, (f"delete everything FORCE left {len(left)} of {total} versions in {bucket}, "
                      f"e.g. {sorted(left)[:5]}\nrequests: {ops}\n{out_of(cp)}")
    assert not markers, f"delete everything FORCE left delete markers in {bucket}: {markers[:5]}\n{out_of(cp)}"
    assert not keys_of(s3, bucket)
    assert cp.returncode == 0, f"delete everything FORCE failed although it removed everything\n{out_of(cp)}"


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    """walstore with bucket `plain` and delete protection `allow`, one log line per request."""
    yield from walstore_in(sandbox, "walstore-lock-", KEEP, region=REGION, buckets=[PLAIN],
                           extra_args=("--delete-protection", "allow"))


@pytest.fixture(scope="module")
def s3(store):
    """boto3 with the root key; creates buckets `locked` (Object Lock) and `versioned`."""
    import boto3
    from botocore.config import Config

    c = boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region,
                     aws_access_key_id=store.access_key, aws_secret_access_key=store.secret_key,
                     config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    where = {"LocationConstraint": store.region}
    c.create_bucket(Bucket=LOCKED, CreateBucketConfiguration=where, ObjectLockEnabledForBucket=True)
    c.create_bucket(Bucket=VERSIONED, CreateBucketConfiguration=where)
    c.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
    assert c.get_bucket_versioning(Bucket=LOCKED).get("Status") == "Enabled", "a lock bucket must be versioned"
    assert c.get_bucket_versioning(Bucket=VERSIONED).get("Status") == "Enabled"
    assert "Status" not in c.get_bucket_versioning(Bucket=PLAIN), "bucket `plain` must look never versioned"
    lock = c.get_object_lock_configuration(Bucket=LOCKED)["ObjectLockConfiguration"]
    assert lock.get("ObjectLockEnabled") == "Enabled", lock
    return c


def settings(store: Walstore, bucket: str, name: str, locked: bool) -> dict[str, str]:
    """Spilo's WAL-G settings for PREFIX in `bucket`; `locked` adds a COMPLIANCE retention."""
    extra = {"S3_RETENTION_PERIOD": str(LOCK_SECONDS), "S3_RETENTION_MODE": "COMPLIANCE"} if locked else {}
    env = walg_settings(store, name, WALG_S3_PREFIX=f"s3://{bucket}/{PREFIX.rstrip('/')}", **extra)
    assert "S3_ENABLE_VERSIONING" not in env, "WAL-G must detect versioning itself"
    return env


class Scenario:
    """State shared by the steps."""

    def __init__(self, sb: Sandbox, store: Walstore, s3) -> None:
        self.sb, self.store, self.s3 = sb, store, s3
        self.clusters: list[Cluster] = []
        self.done: set[str] = set()
        self.env = sb.envdir("locked", settings(store, LOCKED, "lock", locked=True))
        self.backup = ""
        self.pitr: tuple[int, str] = (0, "")
        self.first_upload = 0.0  # time.time() before the first upload to `locked`
        self.versions: dict[tuple[str, str], dict] = {}  # (key, version id) -> ListObjectVersions entry
        self.retain_until: dict[tuple[str, str], dt.datetime] = {}

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")


@pytest.fixture(scope="module")
def scenario(sandbox, store, s3):
    sc = Scenario(sandbox, store, s3)
    try:
        yield sc
    finally:
        for c in reversed(sc.clusters):
            c.destroy()


# -- helpers ------------------------------------------------------------------------


def list_versions(s3, bucket: str, prefix: str = PREFIX) -> tuple[dict[tuple[str, str], dict], list[dict]]:
    """({(key, version id): entry} of the object versions, [delete markers]) under `prefix`."""
    versions: dict[tuple[str, str], dict] = {}
    markers: list[dict] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            versions[(v["Key"], v["VersionId"])] = v
        markers.extend(page.get("DeleteMarkers", []))
    return versions, markers


def keys_of(s3, bucket: str, prefix: str = PREFIX) -> set[str]:
    out: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update(o["Key"] for o in page.get("Contents", []))
    return out


def log_offset(store: Walstore) -> int:
    return store.log_path.stat().st_size


def ops_since(store: Walstore, offset: int) -> dict[str, list[int]]:
    """{operation: [status, ...]} of the requests walstore logged after byte `offset`."""
    with open(store.log_path, "rb") as f:
        f.seek(offset)
        text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))
    out: dict[str, list[int]] = {}
    for line in text.splitlines():
        m = re.search(r'\bop="?(\w+)"?.*\bstatus=(\d{3})', line)
        if m and re.search(r"\brequest\b", line):
            out.setdefault(m.group(1), []).append(int(m.group(2)))
    return out


def walg_delete_everything(sb: Sandbox, envdir, store: Walstore):
    """``wal-g delete everything FORCE --confirm``; returns (process, the requests it made)."""
    offset = log_offset(store)
    cp = sb.walg(envdir, "delete", "everything", "FORCE", "--confirm", check=False)
    time.sleep(0.3)  # the last request line reaches the log
    return cp, ops_since(store, offset)


def out_of(cp) -> str:
    return f"exit {cp.returncode}\nstdout:\n{cp.stdout[-3000:]}\nstderr:\n{cp.stderr[-5000:]}"


def error_code(exc) -> str:
    return exc.response.get("Error", {}).get("Code", "")


# -- step 1: uploads to a lock bucket carry COMPLIANCE retention ----------------------


@with_logs
def test_uploads_to_lock_bucket_are_locked(scenario: Scenario, store: Walstore, s3):
    """Step 1: archive_command + backup-push with S3_RETENTION_*: every version is COMPLIANCE-locked."""
    sc, sb = scenario, scenario.sb
    p = Cluster(sb, "lock-primary")
    sc.clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(sc.env))
    sc.first_upload = time.time()
    p.start()
    p.sql("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    segs = [p.switch_and_wait() for _ in range(2)]
    sc.backup = backup_push(sb, sc.env, p)
    assert re.fullmatch(r"base_0{7}1[0-9A-F]{16}", sc.backup), f"backup name {sc.backup!r}"

    # Rows only the WAL after the backup holds; a recorded time between two batches.
    p.sql("CREATE TABLE pitr (id serial PRIMARY KEY, batch int NOT NULL)")
    p.sql("INSERT INTO pitr (batch) SELECT 1 FROM generate_series(1, 1234)")
    count = int(p.sql("SELECT count(*) FROM pitr"))
    at = p.sql("SELECT clock_timestamp()")
    time.sleep(0.2)
    p.sql("INSERT INTO pitr (batch) SELECT 2 FROM generate_series(1, 567)")
    segs.append(p.switch_and_wait())
    sc.pitr = (count, at)
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0, "archive_command failed on the lock bucket"
    # Nothing may upload into the repository any more: its versions are now fixed.
    p.stop()

    keys = keys_of(s3, LOCKED)
    for seg in segs:
        assert f"{PREFIX}wal_005/{seg}.lz4" in keys, f"{seg}.lz4 not archived: {sorted(keys)}"
    assert f"{PREFIX}basebackups_005/{sc.backup}_backup_stop_sentinel.json" in keys, sorted(keys)
    assert any(k.startswith(f"{PREFIX}basebackups_005/{sc.backup}/tar_partitions/") for k in keys), sorted(keys)

    versions, markers = list_versions(s3, LOCKED)
    assert not markers, f"delete markers in a repository nobody deleted from: {markers[:5]}"
    assert {k for k, _ in versions} == keys, "ListObjectVersions and ListObjectsV2 disagree"
    now = dt.datetime.now(dt.timezone.utc)
    latest_possible = now + dt.timedelta(seconds=LOCK_SECONDS + 5)
    for (key, vid), v in versions.items():
        r = s3.get_object_retention(Bucket=LOCKED, Key=key, VersionId=vid)["Retention"]
        assert r["Mode"] == "COMPLIANCE", f"{key} ({vid}): retention {r}"
        until = r["RetainUntilDate"]
        assert now < until <= latest_possible, \
            f"{key} ({vid}): RetainUntilDate {until} not within ({now}, {latest_possible}] (period {LOCK_SECONDS}s)"
        # The retention a version carries is what a plain HEAD shows too.
        head = s3.head_object(Bucket=LOCKED, Key=key, VersionId=vid)
        assert head.get("ObjectLockMode") == "COMPLIANCE" and head.get("ObjectLockRetainUntilDate") == until, \
            f"HEAD {key} ({vid}): {head.get('ObjectLockMode')} {head.get('ObjectLockRetainUntilDate')}, " \
            f"GetObjectRetention: {r}"
        sc.retain_until[(key, vid)] = until
    sc.versions = versions
    sc.done.add("locked")


# -- step 2: WAL-G's delete cannot remove locked versions; restore still works --------


@with_logs
def test_delete_everything_refused_while_locked(scenario: Scenario, store: Walstore, s3):
    """Step 2: delete everything FORCE tries every version, removes none; PITR restore is exact."""
    sc, sb = scenario, scenario.sb
    sc.require("locked")
    from botocore.exceptions import ClientError

    soonest = min(sc.retain_until.values())
    margin = (soonest - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert margin > 10, (f"step 1 took too long: the first lock ends in {margin:.1f}s, too soon to prove a "
                         f"refusal (raise LOCK_SECONDS, now {LOCK_SECONDS})")

    # Plain S3 first: no one may delete a COMPLIANCE-locked version by id.
    (key, vid) = min(sc.versions)
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=LOCKED, Key=key, VersionId=vid)
    assert error_code(e.value) == "AccessDenied", e.value.response

    cp, ops = walg_delete_everything(sb, sc.env, store)
    print(f"wal-g delete everything FORCE (locked): {out_of(cp)}\nrequests: {ops}")
    assert "GetBucketVersioning" in ops, f"WAL-G did not ask whether the bucket is versioned: {ops}\n{out_of(cp)}"
    assert "ListObjectVersions" in ops, f"WAL-G did not list versions: {ops}\n{out_of(cp)}"
    assert ops.get("DeleteObjects") or ops.get("DeleteObject"), \
        f"WAL-G sent no delete request, so the test proves nothing: {ops}\n{out_of(cp)}"

    versions, markers = list_versions(s3, LOCKED)
    gone = set(sc.versions) - set(versions)
    assert not gone, f"the delete removed {len(gone)} locked versions, e.g. {sorted(gone)[:5]}\n{out_of(cp)}"
    assert set(versions) == set(sc.versions), f"versions appeared: {sorted(set(versions) - set(sc.versions))}"
    assert not markers, f"the delete added delete markers: {markers[:5]}"
    assert keys_of(s3, LOCKED) == {k for k, _ in sc.versions}, "current objects changed"
    for (key, vid), v in versions.items():
        got = s3.get_object(Bucket=LOCKED, Key=key, VersionId=vid)
        body = got["Body"].read()
        assert len(body) == v["Size"] and got["ETag"] == v["ETag"], f"{key} ({vid}) no longer reads back"
    assert [b["backup_name"] for b in backup_list(sb, sc.env)] == [sc.backup], "backup-list lost the backup"

    # Point-in-time restore from the untouched repository.
    count, at = sc.pitr
    r = Cluster(sb, "lock-restore")
    sc.clusters.append(r)
    r.make_empty_data_dir()
    sb.walg(sc.env, "backup-fetch", str(r.data), "LATEST")
    r.configure(**r.base_settings(), **restore_settings(sc.env), recovery_target_time=at,
                recovery_target_action="promote")
    r.touch("recovery.signal")
    try:
        r.start()
        r.wait_promoted()
        got = int(r.sql("SELECT count(*) FROM pitr"))
        assert got == count, f"restored {got} rows, expected exactly {count} (recovery_target_time {at})"
        assert r.sql("SELECT count(*) FROM filler") == "20000"
        log = read_log(r.log)
        assert re.search(r'restored log file "0{7}1[0-9A-F]{16}" from archive', log), "no WAL came from wal-fetch"
        assert "recovery stopping before commit" in log, "recovery did not stop at the target time"
    finally:
        r.destroy()
        sc.clusters.remove(r)
    sc.done.add("refused")


# -- step 3: retention settings on a bucket without Object Lock -----------------------


@with_logs
def test_retention_refused_on_bucket_without_lock(scenario: Scenario, store: Walstore, s3):
    """Step 3: wal-push and backup-push with S3_RETENTION_* fail on `plain`; nothing is stored."""
    sb = scenario.sb
    env = sb.envdir("plain", settings(store, PLAIN, "lock", locked=True))
    c = Cluster(sb, "plain-primary")
    scenario.clusters.append(c)
    c.initdb()
    first = c.data / "pg_wal" / "000000010000000000000001"
    assert first.is_file(), "initdb left no first WAL segment"

    offset = log_offset(store)
    cp = sb.walg(env, "wal-push", str(first), check=False, timeout=180)
    print(f"wal-g wal-push (plain bucket): {out_of(cp)}")
    assert cp.returncode != 0, f"wal-push with a retention succeeded on a bucket without Object Lock\n{out_of(cp)}"
    assert re.search(r"InvalidRequest|Object Lock|400", cp.stdout + cp.stderr), \
        f"wal-push failed, but not for the missing Object Lock\n{out_of(cp)}"

    c.configure(**c.base_settings())
    c.start()
    c.sql("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    cp = sb.walg(env, "backup-push", str(c.data), env=c.pg_env, check=False, timeout=240)
    print(f"wal-g backup-push (plain bucket): {out_of(cp)}")
    assert cp.returncode != 0, f"backup-push with a retention succeeded on a bucket without Object Lock\n{out_of(cp)}"
    c.stop()

    ops = ops_since(store, offset)
    refused = ops.get("PutObject", []) + ops.get("CreateMultipartUpload", [])
    assert refused and all(s == 400 for s in refused), \
        f"uploads with a retention should all be answered 400: {ops}"
    assert not keys_of(s3, PLAIN), f"objects were stored: {sorted(keys_of(s3, PLAIN))[:10]}"
    uploads = s3.list_multipart_uploads(Bucket=PLAIN, Prefix=PREFIX).get("Uploads", [])
    assert not uploads, f"multipart uploads were started: {uploads[:5]}"
    assert re.search(r"request failed.*InvalidRequest|InvalidRequest.*request failed", read_log(store.log_path)), \
        "walstore logged no InvalidRequest refusal"
    c.destroy()
    scenario.clusters.remove(c)


def archiving_primary(scenario: Scenario, name: str, env) -> Cluster:
    """A running primary archiving through WAL-G with `env`, with 20000 rows of filler."""
    p = Cluster(scenario.sb, name)
    scenario.clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(env))
    p.start()
    p.sql("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    return p


# -- step 4: a versioned bucket without lock: delete removes every version ------------


@with_logs
def test_versioned_bucket_delete_everything_removes_every_version(scenario: Scenario, store: Walstore, s3):
    """Step 4: backups + backup-mark on `versioned`; delete everything FORCE leaves no version, no marker."""
    sb = scenario.sb
    env = sb.envdir("versioned", settings(store, VERSIONED, "lock", locked=False))
    p = archiving_primary(scenario, "versioned-primary", env)
    p.switch_and_wait()
    full = backup_push(sb, env, p)
    p.sql("UPDATE filler SET h = md5(h) WHERE g % 10 = 0")
    p.switch_and_wait()
    second = backup_push(sb, env, p)
    # backup-mark rewrites metadata.json: a second version of that key.
    sb.walg(env, "backup-mark", full)
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0
    p.stop()

    keys = keys_of(s3, VERSIONED)
    versions, markers = list_versions(s3, VERSIONED)
    assert keys and {k for k, _ in versions} == keys, "ListObjectVersions and ListObjectsV2 disagree"
    assert not markers, markers[:5]
    meta = f"{PREFIX}basebackups_005/{full}/metadata.json"
    n_meta = sum(1 for k, _ in versions if k == meta)
    assert n_meta >= 2, f"backup-mark should have added a version of {meta}: {n_meta} version(s)"
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket=VERSIONED, Key=meta)
    assert error_code(e.value) == "InvalidRequest", e.value.response

    # Without FORCE the permanent backup stops WAL-G; nothing changes.
    cp = sb.walg(env, "delete", "everything", "--confirm", check=False)
    assert cp.returncode != 0, f"delete everything without FORCE must refuse with a permanent backup\n{out_of(cp)}"
    assert list_versions(s3, VERSIONED) == (versions, []), "the refused delete changed the versions"

    cp, ops = walg_delete_everything(sb, env, store)
    print(f"wal-g delete everything FORCE (versioned): {out_of(cp)}\nrequests: {ops}")
    assert "ListObjectVersions" in ops, f"WAL-G did not list versions: {ops}"
    assert_everything_deleted(s3, VERSIONED, cp, ops, len(versions))
    assert not [b for b in backup_list(sb, env)], "backup-list still shows backups"
    assert second != full


# -- step 5: an attack with a writer key; an as-of view restores the database ---------


def admin_cli(store: Walstore, *args: str) -> dict:
    """``walstore <args> --json --endpoint ...`` with the server's root key; its JSON answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    env.update(WALSTORE_ROOT_ACCESS_KEY=store.access_key, WALSTORE_ROOT_SECRET_KEY=store.secret_key)
    cp = subprocess.run([walstore_exe(), *args, "--json", "--endpoint", store.endpoint],
                        capture_output=True, text=True, timeout=60, env=env)
    assert cp.returncode == 0, f"walstore {' '.join(args)}: exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return json.loads(cp.stdout)


def client_with_key(store: Walstore, key: dict):
    """boto3 with an access key from ``walstore key create`` (path style, no retries)."""
    import boto3
    from botocore.config import Config

    kw = store.boto3_kwargs()
    kw.update(aws_access_key_id=key["id"], aws_secret_access_key=key["secret"])
    return boto3.client("s3", **kw, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def objects_of(s3, bucket: str, prefix: str = PREFIX, v1: bool = False) -> dict[str, tuple[str, int]]:
    """{key: (ETag, size)} of the current objects under `prefix` (ListObjectsV2, or V1)."""
    out: dict[str, tuple[str, int]] = {}
    for page in s3.get_paginator("list_objects" if v1 else "list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update((o["Key"], (o["ETag"], o["Size"])) for o in page.get("Contents", []))
    return out


def status_and_code(exc) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], error_code(exc)


@with_logs
def test_asof_view_restores_after_writer_attack(scenario: Scenario, store: Walstore, s3):
    """Step 5: a writer key deletes and overwrites the repository; an as-of view restores it exactly."""
    sb = scenario.sb
    from botocore.exceptions import ClientError

    s3.create_bucket(Bucket=ATTACKED, CreateBucketConfiguration={"LocationConstraint": store.region})
    s3.put_bucket_versioning(Bucket=ATTACKED, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=ATTACKED).get("Status") == "Enabled"
    env = sb.envdir("attacked", settings(store, ATTACKED, "lock", locked=False))

    # The database and its repository, all archived before T.
    p = archiving_primary(scenario, "attacked-primary", env)
    p.sql("CREATE TABLE victim (id serial PRIMARY KEY, batch int NOT NULL)")
    p.sql("INSERT INTO victim (batch) SELECT 1 FROM generate_series(1, 1000)")
    p.switch_and_wait()
    backup = backup_push(sb, env, p)
    # Rows only the WAL archived after the backup holds.
    p.sql("INSERT INTO victim (batch) SELECT 2 FROM generate_series(1, 777)")
    last_seg = p.switch_and_wait()
    count = int(p.sql("SELECT count(*) FROM victim"))
    assert count == 1777
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0, "archive_command failed"
    p.stop()  # the archiver's last round ends with the postmaster: no upload after this
    time.sleep(1.5)
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # >= 0.5 s after the last upload
    at_text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.5)  # the attack starts >= 1.5 s after T

    before = objects_of(s3, ATTACKED)
    sentinel = f"{PREFIX}basebackups_005/{backup}_backup_stop_sentinel.json"
    last_key = f"{PREFIX}wal_005/{last_seg}.lz4"
    # A segment after the newest archived one (the shutdown may have archived one more).
    newest = max(m.group(1) for k in before if (m := re.search(r"wal_005/([0-9A-F]{24})\.lz4$", k)))
    tl, segno = int(newest[:8], 16), int(newest[8:16], 16) * 256 + int(newest[16:], 16)
    planted = f"{PREFIX}wal_005/{segment_name(tl, segno + 1)}.lz4"
    assert sentinel in before and last_key in before and planted not in before, sorted(before)
    versions, markers = list_versions(s3, ATTACKED)
    assert not markers and {k for k, _ in versions} == set(before)
    late = [(k, v["LastModified"]) for (k, _), v in versions.items() if v["LastModified"] > at]
    assert not late, f"versions written after T={at_text}: {late[:5]}"
    assert [b["backup_name"] for b in backup_list(sb, env)] == [backup]

    # The attack: a writer key (no administrator) deletes everything and writes garbage.
    key = admin_cli(store, "key", "create", "--role", "writer")
    assert key["id"] != store.access_key
    attacker = client_with_key(store, key)
    with pytest.raises(ClientError) as e:  # not an administrator
        attacker.put_bucket_versioning(Bucket=ATTACKED, VersioningConfiguration={"Status": "Suspended"})
    assert status_and_code(e.value) == (403, "AccessDenied"), e.value.response
    # Overwriting the sentinel of the completed backup is refused (the identity check keeps
    # a completed backup closed); so every key gets a delete marker, then garbage goes
    # where the last segment was (walstore refuses to overwrite a stored segment with
    # other bytes) and after the newest one.
    with pytest.raises(ClientError) as e:
        attacker.put_object(Bucket=ATTACKED, Key=sentinel, Body=os.urandom(4096))
    assert status_and_code(e.value) == (412, "PreconditionFailed"), e.value.response
    assert "is complete" in e.value.response["Error"]["Message"], e.value.response
    garbage = {k: os.urandom(4096) for k in (last_key, planted)}
    keys = sorted(before)
    for i in range(0, len(keys), 1000):
        r = attacker.delete_objects(Bucket=ATTACKED, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        assert not r.get("Errors"), f"the writer's DeleteObjects failed: {r['Errors'][:5]}"
        deleted = r.get("Deleted", [])
        assert len(deleted) == len(keys[i:i + 1000]) and all(d.get("DeleteMarker") for d in deleted), deleted[:5]
    for k in (last_key, planted):
        attacker.put_object(Bucket=ATTACKED, Key=k, Body=garbage[k])
    assert set(objects_of(s3, ATTACKED)) == set(garbage), "the attack did not leave just the garbage"
    cp = sb.walg(env, "backup-list", "--detail", "--json", check=False)
    print(f"wal-g backup-list (attacked bucket): {out_of(cp)}")
    listed = [] if cp.returncode != 0 or not cp.stdout.strip() else json.loads(cp.stdout)
    assert not [b for b in listed if b.get("start_lsn")], f"backup-list still shows a usable backup:\n{out_of(cp)}"
    broken = Cluster(sb, "attacked-broken")
    broken.make_empty_data_dir()
    cp = sb.walg(env, "backup-fetch", str(broken.data), "LATEST", check=False)
    broken.destroy()
    assert cp.returncode != 0, f"backup-fetch from the attacked bucket succeeded:\n{out_of(cp)}"

    # The as-of view of the repository at T.
    view = admin_cli(store, "asof", "create", f"{ATTACKED}/{PREFIX}", "--at", at_text, "--ttl", "1h")
    name = view["name"]
    assert view["source"] == ATTACKED and view["prefix"] == PREFIX, view
    assert name not in (ATTACKED, LOCKED, PLAIN, VERSIONED), view
    s3.head_bucket(Bucket=name)
    assert "Status" not in s3.get_bucket_versioning(Bucket=name), "a view must answer no versioning status"
    assert objects_of(s3, name) == before, "ListObjectsV2 on the view differs from the repository at T"
    assert objects_of(s3, name, v1=True) == before, "ListObjects (V1) on the view differs from the repository at T"
    for k in (sentinel, last_key):
        got = s3.get_object(Bucket=name, Key=k)
        body = got["Body"].read()
        assert (got["ETag"], len(body)) == before[k] and body != garbage.get(k), f"the view serves another {k}"
        assert s3.head_object(Bucket=name, Key=k)["ETag"] == before[k][0]
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=name, Key=planted)
    assert status_and_code(e.value)[0] == 404, f"the view shows {planted}, written after T"

    # Read-only, for the administrator too.
    for who, c in (("root", s3), ("writer", attacker)):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=name, Key=sentinel, Body=b"overwrite through the view")
        assert status_and_code(e.value) == (403, "AccessDenied"), f"PUT to the view ({who}): {e.value.response}"
        with pytest.raises(ClientError) as e:
            c.delete_object(Bucket=name, Key=sentinel)
        assert status_and_code(e.value) == (403, "AccessDenied"), f"DELETE in the view ({who}): {e.value.response}"
    assert objects_of(s3, name) == before, "a refused write changed the view"

    # WAL-G restores from the view: backup-fetch, then wal-fetch to the end of the archive.
    venv = sb.envdir("asof-view", walg_settings(store, "lock", WALG_S3_PREFIX=f"s3://{name}/{PREFIX.rstrip('/')}"))
    assert [b["backup_name"] for b in backup_list(sb, venv)] == [backup], "backup-list on the view"
    r = Cluster(sb, "attacked-restore")
    scenario.clusters.append(r)
    r.make_empty_data_dir()
    sb.walg(venv, "backup-fetch", str(r.data), "LATEST")
    assert (r.data / "PG_VERSION").read_text().strip() == "15"
    r.configure(**r.base_settings(), **restore_settings(venv))
    r.touch("recovery.signal")
    r.start()
    r.wait_promoted()
    got = int(r.sql("SELECT count(*) FROM victim"))
    assert got == count, f"restored {got} rows from the as-of view, expected exactly {count}"
    assert r.sql("SELECT count(*) FROM victim WHERE batch = 2") == "777"
    assert r.sql("SELECT count(*) FROM filler") == "20000"
    assert f'restored log file "{last_seg}" from archive' in read_log(r.log), \
        f"recovery did not replay {last_seg} (overwritten in the bucket) from the view"
    r.destroy()
    scenario.clusters.remove(r)
    # The attacked bucket itself is as the attacker left it.
    assert set(objects_of(s3, ATTACKED)) == set(garbage)


# -- step 6: once the retention passed, the same delete removes every version ---------


@with_logs
def test_delete_everything_after_retention_passed(scenario: Scenario, store: Walstore, s3):
    """Step 6: after the last RetainUntilDate, delete everything FORCE removes every version."""
    sc, sb = scenario, scenario.sb
    sc.require("refused")
    last = max(sc.retain_until.values())
    wait = (last - dt.datetime.now(dt.timezone.utc)).total_seconds() + 2
    assert wait <= LOCK_SECONDS + 10, f"the last lock ends in {wait:.0f}s, later than WAL-G asked for"
    if wait > 0:
        time.sleep(wait)
    (key, vid) = max(sc.versions)
    r = s3.get_object_retention(Bucket=LOCKED, Key=key, VersionId=vid)["Retention"]
    assert r["RetainUntilDate"] < dt.datetime.now(dt.timezone.utc), r

    cp, ops = walg_delete_everything(sb, sc.env, store)
    print(f"wal-g delete everything FORCE (expired): {out_of(cp)}\nrequests: {ops}")
    assert_everything_deleted(s3, LOCKED, cp, ops, len(sc.versions))
    sc.done.add("expired")


# -- step 7 ---------------------------------------------------------------------------


def test_server_answered_no_5xx(scenario: Scenario, store: Walstore):
    """Step 7: WAL-G retries 5xx silently: the server must not have failed any request."""
    log = read_log(store.log_path)
    assert re.search(r"\brequest\b.*\bstatus=\d{3}", log), "walstore logged no requests"
    errors = [ln for ln in log.splitlines() if re.search(r"status=5\d\d", ln)]
    assert not errors, f"{len(errors)} requests answered 5xx, e.g.:\n" + "\n".join(errors[:10])
