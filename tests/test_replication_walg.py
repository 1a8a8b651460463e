"""Off-box replication, proven with WAL-G v3.0.9 and PostgreSQL 15: the copy restores.

One "front" walstore (bucket ``pgb``) replicates, with ``--deletes mirror`` and
the prefix ``site-a/``, to two targets: a real MinIO and a second walstore.
Steps in file order:

1. Both targets are added (``walstore replication add``); the probe answers ok.
2. PostgreSQL archives to the front with ``archive_command = wal-g wal-push``;
   full, full, delta ``backup-push`` with rows between them; a recorded time
   (and the exact row count at it) after the last backup, more rows after it,
   the segment holding them archived; the primary stops (the repository is final).
3. Both targets settle (bounded wait): state ``ok``, no backlog, no failure;
   every object of the repository is on each target under
   ``site-a/pgb/<repo>`` with the same size and its ``walstore-*`` metadata.
4. /metrics of the front: backlog 0 per target, the off-box WAL timestamp of the repository.
5. WAL-G pointed directly at the MinIO copy, and at the walstore copy: the
   same ``backup-list``, and backup-fetch LATEST (a delta) + wal-fetch
   recovery to the recorded time gives exactly the recorded rows.
6. ``walstore rebuild`` from the MinIO copy into an empty data directory exits
   0; a walstore on it lists every key with the front's ETag and LastModified,
   and WAL-G with the original ``s3://pgb/...`` prefix lists and restores the same.
7. No server answered a request with 5xx.

A step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_replication_walg.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from harness import Minio, Walstore, minio_exe, minio_missing, rmtree, tempdir, wait_for, walstore_exe
from pgcluster import Cluster, read_log, tail, walg_sandbox
from test_walg import REGION, archive_settings, backup_list, backup_push, restore, walg_settings
from test_walg_lock import with_logs

KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
BUCKET = "pgb"  # on the front (and on the rebuilt walstore)
REPO = "spilo/repl/wal/15"  # the WAL-G repository inside BUCKET
SITE = "site-a/"
MINIO_BUCKET, COPY_BUCKET = "offsite", "copies"
TARGETS = ("to-minio", "to-walstore")
#: Where the repository lies on both targets (target bucket, key prefix).
REPLICA_PREFIX = f"{SITE}{BUCKET}/{REPO}"


def s3_client(kwargs: dict):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", **kwargs, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def listing(s3, bucket: str, prefix: str) -> dict[str, dict]:
    """Every object under `prefix/` (ListObjectsV2, all pages), by key relative to it."""
    out: dict[str, dict] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1:]] = o
    return out


def creds_file(path, access_key: str, secret_key: str):
    path.write_text(f"access_key_id = {access_key}\nsecret_access_key = {secret_key}\n")
    path.chmod(0o600)
    return path


def walg_env(sc: "Scenario", name: str, server, s3_prefix: str = f"s3://{BUCKET}/{REPO}"):
    """An envdir with Spilo's WAL-G settings for `server` (a Walstore or the Minio) and `s3_prefix`."""
    return sc.sb.envdir(name, walg_settings(server, "repl", AWS_REGION=server.region, WALG_S3_PREFIX=s3_prefix))


def no_5xx(*stores: Walstore) -> None:
    for s in stores:
        bad = [ln for ln in read_log(s.log_path).splitlines() if re.search(r"status=5\d\d", ln)]
        assert not bad, f"{s.log_path}: {len(bad)} requests answered 5xx, e.g.:\n" + "\n".join(bad[:10])


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    if minio_exe() is None:
        pytest.skip(minio_missing())
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def workdir(sandbox):
    d = tempdir("walstore-repl-")
    yield d
    if not KEEP:
        rmtree(d)


@pytest.fixture(scope="module")
def minio(workdir, sandbox):
    m = Minio(workdir / "minio").start()
    sandbox.logs["minio"] = workdir / "minio.log"
    s3_client(m.boto3_kwargs()).create_bucket(Bucket=MINIO_BUCKET)
    yield m
    m.stop()


def started(sandbox, label: str, data_dir, **kw) -> Walstore:
    s = Walstore(data_dir=data_dir, region=REGION, extra_args=["--log-level", "info,s3api=debug"], **kw).start()
    sandbox.logs[label] = s.log_path
    return s


@pytest.fixture(scope="module")
def servers(workdir, sandbox):
    """{"front", "copy", and later "rebuilt"}: the walstore processes, stopped (exit 0) at the end."""
    made = {"copy": started(sandbox, "walstore copy", workdir / "copy", buckets=[COPY_BUCKET]),
            "front": started(sandbox, "walstore", workdir / "front", buckets=[BUCKET])}
    yield made
    codes = {name: s.stop() for name, s in made.items()}
    assert set(codes.values()) == {0}, f"walstore exit codes {codes}; front log:\n{tail(made['front'].log_path, 40)}"


class Scenario:
    """State shared by the steps."""

    def __init__(self, sandbox, workdir, minio: Minio, servers: dict[str, Walstore]) -> None:
        self.sb, self.dir, self.minio, self.servers = sandbox, workdir, minio, servers
        self.front, self.copy = servers["front"], servers["copy"]
        self.env = walg_env(self, "front", self.front)
        self.clusters: list[Cluster] = []
        self.done: set[str] = set()
        self.backups: list[str] = []
        self.listed: list[dict] = []  # backup-list --detail --json on the front
        self.pitr: tuple[int, str] = (0, "")
        self.total_rows = 0
        self.front_objects: dict[str, dict] = {}  # the repository on the front, by key relative to it
        self.newest_wal: tuple[str, float] = ("", 0.0)  # its newest segment: name, LastModified

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def target(self, name: str) -> tuple:
        """(the server, its bucket) of replication target `name`."""
        return {"to-minio": (self.minio, MINIO_BUCKET), "to-walstore": (self.copy, COPY_BUCKET)}[name]

    def status(self, name: str) -> dict:
        return self.front.admin("replication", "status", name)


@pytest.fixture(scope="module")
def scenario(sandbox, workdir, minio, servers):
    sc = Scenario(sandbox, workdir, minio, servers)
    try:
        yield sc
    finally:
        for c in reversed(sc.clusters):
            c.destroy()


# -- step 1 -------------------------------------------------------------------------


@with_logs
def test_targets_added(scenario: Scenario):
    """Step 1: replication add to MinIO and to a second walstore; the probes answer ok."""
    sc, copy = scenario, scenario.copy
    files = {"to-minio": sc.minio.credentials_file(sc.dir / "minio.cred"),
             "to-walstore": creds_file(sc.dir / "copy.cred", copy.access_key, copy.secret_key)}
    where = {name: (server.endpoint, bucket, server.region) for name in TARGETS for server, bucket in [sc.target(name)]}
    for name in TARGETS:
        endpoint, bucket, region = where[name]
        added = sc.front.admin("replication", "add", name, "--endpoint", endpoint, "--bucket", bucket,
                               "--prefix", SITE, "--region", region, "--credentials-file", str(files[name]),
                               "--deletes", "mirror")
        assert added.get("name") == name and added.get("probe") == "ok", added
        assert added.get("journaled") == 0, f"nothing is stored yet, but {name} journaled: {added}"
    listed = {t["name"]: t for t in sc.front.admin("replication", "list")["targets"]}
    assert set(listed) == set(TARGETS), listed
    for name in TARGETS:
        t = listed[name]
        assert (t["endpoint"], t["bucket"], t["region"]) == where[name], t
        assert t["prefix"] == SITE and t["deletes"] == "mirror" and t["paused"] is False, t
    sc.done.add("targets")


# -- step 2 -------------------------------------------------------------------------


@with_logs
def test_archive_and_backups_on_front(scenario: Scenario):
    """Step 2: archive_command + full, full, delta backup-push; a recorded time after the last backup."""
    sc, sb = scenario, scenario.sb
    sc.require("targets")
    p = Cluster(sb, "repl-primary")
    sc.clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(sc.env))
    p.start()
    p.sql("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL, pad text NOT NULL)")
    for batch, delta in ((1, False), (2, False), (3, True)):
        p.sql(f"INSERT INTO t (batch, pad) SELECT {batch}, md5(g::text) FROM generate_series(1, 1500) g")
        p.switch_and_wait()
        sc.backups.append(backup_push(sb, sc.env, p, **({"WALG_DELTA_MAX_STEPS": "1"} if delta else {})))
    full, delta = sc.backups[1], sc.backups[2]
    assert re.fullmatch(rf"base_0{{7}}1[0-9A-F]{{16}}_D_{full[5:]}", delta), f"{delta} is not a delta of {full}"

    # Rows only the WAL after the last backup holds; the recorded time lies between two batches.
    p.sql("INSERT INTO t (batch, pad) SELECT 4, 'before' FROM generate_series(1, 1234)")
    count, at = int(p.sql("SELECT count(*) FROM t")), p.sql("SELECT clock_timestamp()")
    time.sleep(0.2)
    p.sql("INSERT INTO t (batch, pad) SELECT 5, 'after' FROM generate_series(1, 567)")
    p.switch_and_wait()
    sc.pitr, sc.total_rows = (count, at), count + 567
    assert count == 3 * 1500 + 1234, count
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0, "archive_command failed"
    p.stop()  # the archiver's last round ends with the postmaster: the repository is final now

    sc.listed = backup_list(sb, sc.env)
    assert [b["backup_name"] for b in sc.listed] == sc.backups, sc.listed
    sc.front_objects = listing(s3_client(sc.front.boto3_kwargs()), BUCKET, REPO)
    newest = max(k for k in sc.front_objects if re.fullmatch(r"wal_005/[0-9A-F]{24}\.lz4", k))
    sc.newest_wal = (newest[8:32], sc.front_objects[newest]["LastModified"].timestamp())
    sc.done.add("backups")


# -- step 3 -------------------------------------------------------------------------


@with_logs
def test_targets_settle_with_every_object(scenario: Scenario):
    """Step 3: both targets reach backlog 0 / state ok; every object is there with its size and metadata."""
    sc = scenario
    sc.require("backups")

    def settled() -> bool:
        return all(s["state"] == "ok" and s["backlog_objects"] == 0 for s in map(sc.status, TARGETS))
    try:
        wait_for(settled, timeout=120, interval=1, what="both replication targets to settle")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {json.dumps([sc.status(n) for n in TARGETS], indent=1)}") from None

    n = len(sc.front_objects)
    size = sum(o["Size"] for o in sc.front_objects.values())
    for name in TARGETS:
        s = sc.status(name)
        assert s["paused"] is False and s["consecutive_failures"] == 0 and s["last_error"] is None, s
        assert s["backlog_bytes"] == 0 and s["held_deletes"] == 0, s
        assert s["replicated_objects"] >= n and s["replicated_bytes"] >= size, (n, size, s)
        assert s["replicated_deletes"] == 0, s
        assert s["last_success"] and abs(time.time() - s["last_success"]) < 600, s
        (wal,) = s["offbox_wal"]  # the one repository, its newest segment
        assert (wal["bucket"], wal["repository"].strip("/"), wal["segment"]) == (BUCKET, REPO, sc.newest_wal[0]), \
            (name, wal, sc.newest_wal)
        assert abs(wal["last_modified"] - sc.newest_wal[1]) < 1, (name, wal, sc.newest_wal)

    clients = {name: (s3_client(server.boto3_kwargs()), bucket) for name in TARGETS
               for server, bucket in [sc.target(name)]}
    for name, (c, bucket) in clients.items():
        copied = listing(c, bucket, REPLICA_PREFIX)
        assert set(copied) == set(sc.front_objects), \
            f"{name}: missing {sorted(set(sc.front_objects) - set(copied))[:5]}, " \
            f"extra {sorted(set(copied) - set(sc.front_objects))[:5]}"
        sizes = {k: (o["Size"], copied[k]["Size"]) for k, o in sc.front_objects.items() if o["Size"] != copied[k]["Size"]}
        assert not sizes, f"{name}: sizes differ (front, copy): {sizes}"

    # The metadata every replicated object carries: the original mtime, ETag and SHA-256.
    front = s3_client(sc.front.boto3_kwargs())
    sentinel = f"basebackups_005/{sc.backups[-1]}_backup_stop_sentinel.json"
    body = front.get_object(Bucket=BUCKET, Key=f"{REPO}/{sentinel}")["Body"].read()
    for name, (c, bucket) in clients.items():
        got = c.get_object(Bucket=bucket, Key=f"{REPLICA_PREFIX}/{sentinel}")
        meta, o = got["Metadata"], sc.front_objects[sentinel]
        assert got["Body"].read() == body, f"{name}: the sentinel's bytes differ"
        assert meta.get("walstore-sha256") == hashlib.sha256(body).hexdigest(), (name, meta)
        assert meta.get("walstore-etag", "").strip('"') == o["ETag"].strip('"'), (name, meta, o["ETag"])
        assert int(meta.get("walstore-mtime", 0)) // 1000 == int(o["LastModified"].timestamp()), \
            (name, meta, o["LastModified"])
    sc.done.add("settled")


# -- step 4 -------------------------------------------------------------------------


@with_logs
def test_metrics_show_settled_targets(scenario: Scenario):
    """Step 4: /metrics: backlog 0 per target, the off-box WAL timestamp of the repository."""
    sc = scenario
    sc.require("settled")
    status, body = sc.front.get("/metrics")
    assert status == 200, (status, body[:300])
    text = body.decode()
    for name in TARGETS:
        backlog = re.findall(rf'^walstore_replication_backlog_objects{{target="{name}"}} (\S+)$', text, re.M)
        assert backlog == ["0"], f"walstore_replication_backlog_objects for {name}: {backlog}"
        assert re.search(rf'^walstore_replication_failing{{target="{name}"}} 0$', text, re.M), name
        offbox = [(m.group(1), float(m.group(2))) for m in re.finditer(
            rf'^walstore_replication_wal_offbox_timestamp_seconds{{(?=[^}}]*target="{name}")'
            rf'(?=[^}}]*bucket="{BUCKET}")[^}}]*repo="([^"]*)"[^}}]*}} (\S+)$', text, re.M)]
        assert offbox, f"no walstore_replication_wal_offbox_timestamp_seconds for {name}, bucket {BUCKET}:\n" + \
            "\n".join(ln for ln in text.splitlines() if "offbox" in ln)
        (repo, ts), = offbox
        assert repo.strip("/") == REPO, f"repo label {repo!r}"
        assert abs(ts - sc.newest_wal[1]) < 1, f"{name}: off-box WAL written at {ts}, newest segment: {sc.newest_wal}"
    sc.done.add("metrics")


# -- step 5 -------------------------------------------------------------------------


def pitr_restore(sc: Scenario, envdir, name: str) -> None:
    """backup-fetch LATEST + wal-fetch recovery to the recorded time: exactly the recorded rows."""
    count, at = sc.pitr
    r = restore(sc.sb, envdir, "LATEST", name, recovery_target_time=at, recovery_target_action="promote")
    sc.clusters.append(r)
    try:
        r.start()
        r.wait_promoted()
        got = int(r.sql("SELECT count(*) FROM t"))
        assert got == count, f"{name}: restored {got} rows, expected exactly {count} (recovery_target_time {at})"
        assert r.sql("SELECT count(*) FROM t WHERE batch = 5") == "0"
        log = read_log(r.log)
        assert re.search(r'restored log file "0{7}1[0-9A-F]{16}" from archive', log), f"{name}: no WAL was fetched"
        assert "recovery stopping before commit" in log, f"{name}: recovery did not stop at the target time"
    finally:
        r.destroy()
        sc.clusters.remove(r)


def same_backups(sc: Scenario, envdir, where: str) -> None:
    """backup-list --detail --json through `envdir` shows the front's backups, in the same order."""
    fields = ("backup_name", "wal_file_name", "start_lsn", "finish_lsn", "is_permanent")
    want = [tuple(b[f] for f in fields) for b in sc.listed]
    got = [tuple(b[f] for f in fields) for b in backup_list(sc.sb, envdir)]
    assert got == want, f"backup-list on {where}:\n{got}\nfront:\n{want}"


@pytest.mark.parametrize("target", TARGETS)
@with_logs
def test_walg_restores_from_copy(scenario: Scenario, target: str):
    """Step 5: WAL-G pointed directly at site-a/pgb/... on a target lists and restores exactly."""
    sc = scenario
    sc.require("settled")
    server, bucket = sc.target(target)
    env = walg_env(sc, target, server, f"s3://{bucket}/{REPLICA_PREFIX}")
    same_backups(sc, env, f"the copy of {target}")
    pitr_restore(sc, env, f"from-{target}")


# -- step 6 -------------------------------------------------------------------------


@with_logs
def test_rebuild_from_minio_restores(scenario: Scenario):
    """Step 6: walstore rebuild from MinIO; the rebuilt walstore has the front's objects and restores."""
    sc = scenario
    sc.require("settled")
    new = sc.dir / "rebuilt"
    new.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALSTORE_", "AWS_"))}
    started_at = time.monotonic()
    cp = subprocess.run([walstore_exe(), "rebuild", "--data-dir", str(new), "--endpoint", sc.minio.endpoint,
                         "--bucket", MINIO_BUCKET, "--prefix", SITE, "--region", sc.minio.region,
                         "--credentials-file", str(sc.dir / "minio.cred")],
                        capture_output=True, text=True, timeout=300, env=env)
    took = time.monotonic() - started_at
    out = f"exit {cp.returncode} after {took:.1f}s\nstdout:\n{cp.stdout[-3000:]}\nstderr:\n{cp.stderr[-3000:]}"
    print(f"walstore rebuild: {out}")
    assert cp.returncode == 0, out
    n = len(sc.front_objects)
    assert re.search(rf"^rebuilt {n} objects\b", cp.stdout, re.M), f"expected 'rebuilt {n} objects'\n{out}"
    assert re.search(rf"^walstore check: {n} objects, 0 problems", cp.stdout, re.M), out
    assert "REFUSED" not in cp.stdout + cp.stderr and not (new / "rebuild-in-progress").exists(), out

    rebuilt = started(sc.sb, "walstore rebuilt", new)
    sc.servers["rebuilt"] = rebuilt
    got = listing(s3_client(rebuilt.boto3_kwargs()), BUCKET, REPO)
    assert set(got) == set(sc.front_objects), \
        f"missing {sorted(set(sc.front_objects) - set(got))[:5]}, extra {sorted(set(got) - set(sc.front_objects))[:5]}"
    differ = {k: ((o["ETag"], o["Size"], o["LastModified"]), (got[k]["ETag"], got[k]["Size"], got[k]["LastModified"]))
              for k, o in sc.front_objects.items()
              if (o["ETag"], o["Size"], o["LastModified"].replace(microsecond=0))
              != (got[k]["ETag"], got[k]["Size"], got[k]["LastModified"].replace(microsecond=0))}
    assert not differ, f"{len(differ)} objects differ (front, rebuilt), e.g. {list(differ.items())[:3]}"

    env = walg_env(sc, "rebuilt", rebuilt)  # the original s3://pgb/... prefix
    same_backups(sc, env, "the rebuilt walstore")
    pitr_restore(sc, env, "from-rebuilt")
    sc.done.add("rebuilt")


# -- step 7 -------------------------------------------------------------------------


def test_no_server_answered_5xx(scenario: Scenario):
    """Step 7: WAL-G retries 5xx silently: no walstore may have failed a request."""
    scenario.require("backups")
    no_5xx(*scenario.servers.values())
