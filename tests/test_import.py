"""`walstore import`: a WAL-G repository moves from MinIO into walstore and stays restorable.

A real MinIO holds the bucket ``legacy``: PostgreSQL 15 archived into it with
WAL-G v3.0.9 (``s3://legacy/spilo/db/wal/15``), plus a few objects of another
kind (``archive/``: two days old by their LastModified, user metadata,
content type and encoding; ``bulk/``: a multipart object with a ``-2`` ETag).
Steps in file order:

1. The source: a full backup, a delta, a permanent full (``backup-push
   --permanent --full``), rows between them; a standby restored from the
   archive streams from the primary, the primary stops, the standby is
   promoted (timeline 2); a recorded time on timeline 2 (and the exact row
   count at it), more rows, WAL archived past it.
2. An online import (``--server``, the running walstore does it, the CLI prints
   progress) into ``pgb`` exits 0 with a complete report; every key has the
   source's ETag, size, LastModified (to the second), content type, encoding
   and user metadata; WAL-G's ``backup-list --detail --json`` on walstore is
   the one on MinIO (order, LATEST, LSNs, is_permanent).
3. backup-fetch LATEST + wal-fetch recovery from walstore to the recorded time
   (across the timeline switch): exactly the recorded rows.
4. A second online import copies nothing.
5. An offline import (``--data-dir``) into a fresh directory is killed with
   SIGKILL midway; run again it completes; ``walstore check`` is clean and a
   walstore on the directory lists every key as MinIO does.
6. ``walstore status`` of the repository: the online and the offline import
   give the same report; its restorable window reaches the recorded time and
   its backups are WAL-G's.
7. ``--dry-run`` into a fresh bucket (the default ``--to``) lists every key and
   stores nothing; after one new object in MinIO, ``--since-last-run`` copies
   exactly it and skips the old objects.
8. An object written through walstore after the cut-over is kept (kept_newer);
   ``--prefix archive/ --to B/P/`` with credentials from the environment.
9. Wrong credentials, an unreachable endpoint, no credentials: a one-line
   error, exit 1, nothing stored.
10. No walstore answered a request with 5xx.

A step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_import.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import Minio, Walstore, free_port, wait_for, walstore_exe
from pgcluster import Cluster
import test_replication_walg as repl
from test_replication_walg import creds_file, no_5xx, pitr_restore, s3_client, started, walg_env
from test_walg import archive_settings, backup_list, backup_push, restore
from test_walg_lock import with_logs

SOURCE = "legacy"  # the MinIO bucket
BUCKET = "pgb"  # where the online import puts it in walstore
REPO = "spilo/db/wal/15"  # the WAL-G repository, the same key prefix on both sides
#: Objects that are not WAL-G's, two days old: `--since-last-run` skips them.
OLD = {"archive/notes.txt", "archive/2019/a.bin", "archive/2019/b.bin"}
BIG = "bulk/base.tar"  # multipart, two parts
PROGRESS = re.compile(r"^import: (\d+)/(\d+) objects", re.M)
#: Module fixtures shared with the replication suite: the WAL-G sandbox, a work directory, a MinIO.
sandbox, workdir, minio = repl.sandbox, repl.workdir, repl.minio


def all_objects(s3, bucket: str, prefix: str = "") -> dict[str, dict]:
    """Every object of `bucket` under `prefix` (ListObjectsV2, all pages), by key."""
    out: dict[str, dict] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update((o["Key"], o) for o in page.get("Contents", []))
    return out


def same_listing(got: dict[str, dict], want: dict[str, dict], where: str) -> None:
    """Same keys; each with the same ETag, size and LastModified to the second."""
    assert set(got) == set(want), \
        f"{where}: missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}"

    def facts(o: dict) -> tuple:
        return o["ETag"], o["Size"], int(o["LastModified"].timestamp())
    differ = {k: (facts(w), facts(got[k])) for k, w in want.items() if facts(w) != facts(got[k])}
    assert not differ, f"{where}: {len(differ)} objects differ (source, walstore), e.g. {list(differ.items())[:3]}"


def by_top(objects: dict[str, dict]) -> dict[str, dict]:
    """The verification an import must report: per first path component, objects and bytes."""
    out: dict[str, dict] = {}
    for k, o in objects.items():
        c = out.setdefault(k.split("/", 1)[0] + "/", {"source_objects": 0, "source_bytes": 0})
        c["source_objects"] += 1
        c["source_bytes"] += o["Size"]
    return {k: {**c, "matching": c["source_objects"]} for k, c in out.items()}


def ms_of(pg_time: str) -> int:
    """Milliseconds since the epoch of a PostgreSQL timestamptz text (rounded down)."""
    t = pg_time.strip()
    if re.search(r"[+-]\d\d$", t):
        t += ":00"
    return int(datetime.datetime.fromisoformat(t).timestamp() * 1000)


def lsn_int(v) -> int:
    """An LSN as WAL-G's integer, from an integer or the text form X/Y."""
    if isinstance(v, int):
        return v
    hi, lo = str(v).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class Run:
    """One `walstore import` run: exit status, the JSON report (or None), progress lines."""

    def __init__(self, args: list[str], code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr
        self.desc = f"walstore {' '.join(args[1:])}\nexit {code}\nstdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-3000:]}"
        try:
            self.report = json.loads(stdout) if stdout.strip() else None
        except json.JSONDecodeError:
            self.report = None
        self.progress = [(int(a), int(b)) for a, b in PROGRESS.findall(stderr)]

    def complete(self, listed: int) -> dict:
        """Asserts exit 0 and a complete report of `listed` objects; returns the report."""
        r = self.report
        assert self.code == 0 and r is not None, self.desc
        assert r["listed"] == listed and r["failed"] == [] and r["interrupted"] is False, self.desc
        assert r["copied"] + r["unchanged"] + len(r["kept_newer"]) == listed, self.desc
        assert r["would_copy"] == [], self.desc
        bad = {k: c for k, c in r["verification"].items() if c["matching"] != c["source_objects"]}
        assert not bad, f"verification does not match: {bad}\n{self.desc}"
        return r

    def one_line_error(self) -> str:
        """Asserts exit 1, no report, no progress beyond 0 objects, one `walstore: ...` line."""
        lines = [ln for ln in self.stderr.strip().splitlines() if not PROGRESS.match(ln)]
        assert self.code == 1 and self.report is None, self.desc
        assert len(lines) == 1 and lines[0].startswith("walstore: "), self.desc
        assert "panicked" not in self.stderr and "backtrace" not in self.stderr.lower(), self.desc
        assert all(done == 0 for done, _ in self.progress), self.desc
        return lines[0]


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(workdir, sandbox):
    """{"front": the walstore the online imports fill (no bucket at first), later "offline"}."""
    made = {"front": started(sandbox, "walstore", workdir / "front")}
    yield made
    codes = {name: s.stop() for name, s in made.items()}
    assert set(codes.values()) <= {0, None}, f"walstore exit codes {codes}"


class Scenario:
    """State shared by the steps."""

    def __init__(self, sandbox, workdir: Path, minio: Minio, servers: dict[str, Walstore]) -> None:
        self.sb, self.dir, self.minio, self.servers = sandbox, workdir, minio, servers
        self.front = servers["front"]
        self.src = s3_client(minio.boto3_kwargs())
        self.src.create_bucket(Bucket=SOURCE)
        self.env = walg_env(self, "minio", minio, f"s3://{SOURCE}/{REPO}")
        self.creds = minio.credentials_file(workdir / "minio.cred")
        self.clusters: list[Cluster] = []
        self.done: set[str] = set()
        self.backups: list[str] = []  # full, delta, permanent full
        self.listed: list[dict] = []  # backup-list --detail --json on MinIO
        self.pitr: tuple[int, str] = (0, "")
        self.source: dict[str, dict] = {}  # the MinIO bucket, by key
        self.offline_dir = workdir / "offline"

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def command(self, *args: str, server: Walstore | None = None, data_dir: Path | None = None,
                endpoint: str | None = None, creds: Path | None | bool = True) -> tuple[list[str], dict]:
        """argv and environment of `walstore import` from MinIO: online against `server` (default
        the front), or offline on `data_dir`; `creds` True: MinIO's credentials file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WALSTORE_", "AWS_"))}
        argv = [walstore_exe(), "import", "--endpoint", endpoint or self.minio.endpoint, "--bucket", SOURCE,
                "--region", self.minio.region, *args, "--json"]
        if creds:
            argv += ["--credentials-file", str(self.creds if creds is True else creds)]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        else:
            server = server or self.front
            argv += ["--server", server.endpoint]
            env.update(WALSTORE_ROOT_ACCESS_KEY=server.access_key, WALSTORE_ROOT_SECRET_KEY=server.secret_key)
        return argv, env

    def run(self, *args: str, extra_env: dict[str, str] | None = None, **kw) -> Run:
        argv, env = self.command(*args, **kw)
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                            env={**env, **(extra_env or {})})
        r = Run(argv, cp.returncode, cp.stdout, cp.stderr)
        print(r.desc if len(r.desc) < 3000 else f"{r.desc[:400]}\n...\n{r.desc[-1500:]}")
        return r


@pytest.fixture(scope="module")
def scenario(sandbox, workdir, minio, servers):
    sc = Scenario(sandbox, workdir, minio, servers)
    yield sc  # what follows runs however the steps ended
    for c in reversed(sc.clusters):
        c.destroy()


def add_rows(c: Cluster, batch: int, n: int) -> None:
    c.sql(f"INSERT INTO t (batch, pad) SELECT {batch}, md5(g::text) FROM generate_series(1, {n}) g")


def put_source_extras(sc: Scenario) -> None:
    """The objects that are not WAL-G's: old ones with metadata, and a multipart one."""
    two_days_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2))
    mtime = two_days_ago.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def backdate(params, **_):  # MinIO takes a replicated object's original time from this header
        params["headers"]["X-Minio-Source-Mtime"] = mtime
    old = s3_client(sc.minio.boto3_kwargs())
    old.meta.events.register("before-call.s3.PutObject", backdate)
    old.put_object(Bucket=SOURCE, Key="archive/notes.txt", Body=gzip.compress(b"restore drill notes\n" * 50),
                   ContentType="text/plain; charset=utf-8", ContentEncoding="gzip",
                   Metadata={"origin": "pg-legacy-01", "reviewed-by": "ops"})
    for name in ("a", "b"):
        old.put_object(Bucket=SOURCE, Key=f"archive/2019/{name}.bin", Body=os.urandom(3000),
                       ContentType="application/octet-stream")
    up = sc.src.create_multipart_upload(Bucket=SOURCE, Key=BIG, ContentType="application/x-tar",
                                        Metadata={"parts": "2"})["UploadId"]
    parts = [sc.src.upload_part(Bucket=SOURCE, Key=BIG, UploadId=up, PartNumber=n, Body=body)["ETag"]
             for n, body in ((1, os.urandom(5 * 1024 * 1024)), (2, os.urandom(1024)))]
    sc.src.complete_multipart_upload(Bucket=SOURCE, Key=BIG, UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(parts, 1)]})


# -- step 1 -------------------------------------------------------------------------


@with_logs
def test_source_repository_in_minio(scenario: Scenario):
    """Step 1: WAL-G archives into MinIO: full, delta, permanent full, timeline 2, a recorded time."""
    sc, sb = scenario, scenario.sb
    p = Cluster(sb, "legacy-primary")
    sc.clusters.append(p)
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(sc.env))
    p.start()
    p.sql("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL, pad text NOT NULL)")
    add_rows(p, 1, 1500)
    p.switch_and_wait()
    sc.backups.append(backup_push(sb, sc.env, p))
    add_rows(p, 2, 1500)
    p.switch_and_wait()
    sc.backups.append(backup_push(sb, sc.env, p, WALG_DELTA_MAX_STEPS="1"))
    add_rows(p, 3, 1500)
    p.switch_and_wait()
    sb.walg(sc.env, "backup-push", str(p.data), "--permanent", "--full", env=p.pg_env)
    sc.backups.append(backup_list(sb, sc.env)[-1]["backup_name"])
    full, delta, permanent = sc.backups
    assert re.fullmatch(rf"base_0{{7}}1[0-9A-F]{{16}}_D_{full[5:]}", delta), f"{delta} is not a delta of {full}"
    assert len(set(sc.backups)) == 3 and "_D_" not in permanent, sc.backups

    # A failover: a standby restored from the archive streams, the primary stops, the standby
    # is promoted and archives timeline 2 (the history file and timeline 1's .partial).
    standby = restore(sb, sc.env, "LATEST", "legacy-standby", hot_standby="on",
                      primary_conninfo=f"host={p.dir} port={p.PORT} user=postgres application_name=standby",
                      **archive_settings(sc.env))
    sc.clusters.append(standby)
    standby.start()
    add_rows(p, 4, 1000)
    wait_for(lambda: standby.try_sql("SELECT count(*) FROM t") == str(3 * 1500 + 1000), timeout=90,
             interval=0.3, what="the standby to replay the primary's rows")
    p.stop()
    standby.promote()
    standby.wait_promoted()
    assert standby.timeline() == 2, standby.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")

    # The recorded time lies on timeline 2, between two batches; WAL is archived past it.
    add_rows(standby, 4, 234)
    count, at = int(standby.sql("SELECT count(*) FROM t")), standby.sql("SELECT clock_timestamp()")
    time.sleep(0.2)
    standby.sql("INSERT INTO t (batch, pad) SELECT 5, 'after' FROM generate_series(1, 567)")
    time.sleep(1.0)  # the segment holding the later rows arrives in a later second than the recorded time
    standby.switch_and_wait()
    sc.pitr = (count, at)
    assert count == 3 * 1500 + 1234, count
    assert int(standby.sql("SELECT failed_count FROM pg_stat_archiver")) == 0, "archive_command failed"
    standby.stop()  # the repository is final now

    put_source_extras(sc)
    sc.listed = backup_list(sb, sc.env)
    assert [b["backup_name"] for b in sc.listed] == sc.backups, sc.listed
    assert [b["is_permanent"] for b in sc.listed] == [False, False, True], sc.listed
    sc.source = all_objects(sc.src, SOURCE)
    names = {k.rsplit("/", 1)[1] for k in sc.source if k.startswith(f"{REPO}/wal_005/")}
    assert "00000002.history.lz4" in names and any(n.endswith(".partial.lz4") for n in names), sorted(names)
    assert any(n.startswith("00000002") and n.endswith(".lz4") and len(n) == 28 for n in names), sorted(names)
    assert sc.source[BIG]["ETag"].strip('"').endswith("-2"), sc.source[BIG]
    sc.done.add("source")


# -- step 2 -------------------------------------------------------------------------


def walg_lists_the_same(sc: Scenario, server: Walstore, name: str) -> None:
    """backup-list --detail --json through walstore equals the one on MinIO (time: to the second)."""
    got = backup_list(sc.sb, walg_env(sc, name, server, f"s3://{BUCKET}/{REPO}"))

    def second(b: dict) -> dict:
        return {**b, "time": re.sub(r"\.\d+", "", b["time"])}
    assert [second(b) for b in got] == [second(b) for b in sc.listed], \
        f"backup-list on {name}:\n{json.dumps(got, indent=1)}\nMinIO:\n{json.dumps(sc.listed, indent=1)}"
    latest = [max(bl, key=lambda b: b["time"])["backup_name"] for bl in (got, sc.listed)]
    assert latest == [sc.backups[-1]] * 2, f"LATEST (walstore, MinIO): {latest}"


@with_logs
def test_online_import(scenario: Scenario):
    """Step 2: the running walstore imports the bucket into `pgb`; every key as in MinIO."""
    sc = scenario
    sc.require("source")
    n, size = len(sc.source), sum(o["Size"] for o in sc.source.values())
    r = sc.run("--to", BUCKET).complete(n)
    assert (r["copied"], r["copied_bytes"], r["unchanged"], r["skipped_old"]) == (n, size, 0, 0), r
    assert r["kept_newer"] == [] and r["verification"] == by_top(sc.source), r
    assert set(r["verification"]) == {"spilo/", "archive/", "bulk/"}, r["verification"]

    s3 = s3_client(sc.front.boto3_kwargs())
    got = all_objects(s3, BUCKET)
    same_listing(got, sc.source, "online import")
    for key in sc.source:  # what GET/HEAD answers: metadata, content type and encoding
        want, have = (c.head_object(Bucket=b, Key=key) for c, b in ((sc.src, SOURCE), (s3, BUCKET)))
        fields = ("ETag", "ContentLength", "ContentType", "ContentEncoding", "Metadata", "LastModified")
        assert {f: have.get(f) for f in fields} == {f: want.get(f) for f in fields}, key
    for key in (BIG, f"{REPO}/basebackups_005/{sc.backups[-1]}_backup_stop_sentinel.json"):
        bodies = [c.get_object(Bucket=b, Key=key)["Body"].read() for c, b in ((sc.src, SOURCE), (s3, BUCKET))]
        assert hashlib.sha256(bodies[0]).digest() == hashlib.sha256(bodies[1]).digest(), key
    walg_lists_the_same(sc, sc.front, "front")
    sc.done.add("imported")


# -- step 3 -------------------------------------------------------------------------


@with_logs
def test_pitr_from_walstore(scenario: Scenario):
    """Step 3: LATEST (the permanent full) + WAL across the timeline switch to the recorded time."""
    sc = scenario
    sc.require("imported")
    pitr_restore(sc, walg_env(sc, "front-restore", sc.front, f"s3://{BUCKET}/{REPO}"), "pitr-from-walstore")
    sc.done.add("pitr")


# -- step 4 -------------------------------------------------------------------------


@with_logs
def test_second_import_copies_nothing(scenario: Scenario):
    """Step 4: run again, nothing is copied: every object is unchanged."""
    sc = scenario
    sc.require("imported")
    r = sc.run("--to", BUCKET).complete(len(sc.source))
    assert (r["copied"], r["copied_bytes"], r["unchanged"]) == (0, 0, len(sc.source)), r
    sc.done.add("again")


# -- step 5 -------------------------------------------------------------------------


def kill_midway(sc: Scenario, data_dir: Path, delay: float) -> tuple[int | None, str]:
    """Starts an offline import into `data_dir`; SIGKILLs it `delay` seconds after its first
    progress line (the listing is done, copying starts). Returns (exit status, its stderr)."""
    argv, env = sc.command("--to", BUCKET, data_dir=data_dir)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.DEVNULL)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln.decode(errors="replace")) for ln in proc.stderr],
                     daemon=True).start()
    seen: list[str] = []
    try:
        seen.append(lines.get(timeout=60))
        time.sleep(delay)
    except queue.Empty:
        pass
    finally:
        proc.kill()
        proc.wait(30)
    time.sleep(0.1)
    while not lines.empty():
        seen.append(lines.get())
    return proc.returncode, "".join(seen)


@with_logs
def test_offline_import_killed_and_resumed(scenario: Scenario):
    """Step 5: offline import SIGKILLed midway; the rerun completes; the result is MinIO's bucket."""
    sc = scenario
    sc.require("source")
    # The copy takes a fraction of a second: kill sooner when a run finished before the kill.
    for attempt, delay in enumerate((0.05, 0.02, 0.0)):
        sc.offline_dir = sc.dir / f"offline-{attempt}"
        sc.offline_dir.mkdir()
        code, stderr = kill_midway(sc, sc.offline_dir, delay)
        print(f"killed {delay}s after the listing: exit {code}\n{stderr}")
        if code == -signal.SIGKILL:
            break
    assert code == -signal.SIGKILL, f"the import always ended before the kill: exit {code}\n{stderr}"

    n = len(sc.source)
    r = sc.run("--to", BUCKET, data_dir=sc.offline_dir).complete(n)
    assert r["copied"] > 0 and r["copied"] + r["unchanged"] == n, r
    check = subprocess.run([walstore_exe(), "check", "--data-dir", str(sc.offline_dir), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"walstore check after the resumed import:\n{check.stdout}\n{check.stderr}"

    offline = started(sc.sb, "walstore offline", sc.offline_dir)
    sc.servers["offline"] = offline
    try:
        same_listing(all_objects(s3_client(offline.boto3_kwargs()), BUCKET), sc.source, "offline import")
        walg_lists_the_same(sc, offline, "offline")
    finally:
        code = offline.stop()
    assert code == 0, f"walstore on the offline import exited {code}"
    sc.done.add("offline")


# -- step 6 -------------------------------------------------------------------------


@with_logs
def test_status_window_same_as_offline_import(scenario: Scenario):
    """Step 6: `walstore status`: online and offline imports agree; the window reaches the recorded time."""
    sc = scenario
    sc.require("imported", "offline")
    target = f"{BUCKET}/{REPO}/"
    online = sc.front.admin("status", target)
    cp = subprocess.run([walstore_exe(), "status", target, "--data-dir", str(sc.offline_dir), "--json"],
                        capture_output=True, text=True, timeout=120,
                        env={k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")})
    assert cp.returncode == 0, f"walstore status --data-dir: exit {cp.returncode}\n{cp.stderr}"
    offline = json.loads(cp.stdout)
    assert offline == online, \
        f"status differs\nonline:\n{json.dumps(online, indent=1)}\noffline:\n{json.dumps(offline, indent=1)}"

    (repo,) = online["repositories"]
    assert repo["prefix"].strip("/") == REPO, repo["prefix"]
    assert not repo["alerts"], repo["alerts"]
    rep = repo["report"]
    assert rep["gaps"] == [], rep["gaps"]
    count, at = sc.pitr
    windows = rep["windows"]
    assert windows and max(w["to"] for w in windows) >= ms_of(at), (windows, at)
    walg = {b["backup_name"]: b for b in sc.listed}
    backups = {b["name"]: b for b in repo["backups"]}
    assert set(backups) == set(walg), (sorted(backups), sorted(walg))
    for name, b in backups.items():
        w = walg[name]
        assert b["status"] == "Complete" and b["restorable"] is True, b
        assert b["permanent"] == w["is_permanent"], (b, w)
        assert (lsn_int(b["start_lsn"]), lsn_int(b["finish_lsn"])) == (w["start_lsn"], w["finish_lsn"]), (b, w)
    assert {w["backup"] for w in windows} <= set(walg), windows
    for w in windows:  # from: its backup's finish; to: when MinIO received the last continuous segment
        assert w["from"] == backups[w["backup"]]["finished_at"], (w, backups[w["backup"]])
    segment, received, _ = rep["last_segment"]
    key = f"{REPO}/wal_005/{segment}.lz4"
    assert key in sc.source and segment.startswith("00000002"), (segment, sorted(sc.source)[-5:])
    assert max(w["to"] for w in windows) // 1000 == received // 1000 \
        == int(sc.source[key]["LastModified"].timestamp()), (windows, received, sc.source[key])
    sc.done.add("status")


# -- step 7 -------------------------------------------------------------------------


@with_logs
def test_dry_run_then_since_last_run(scenario: Scenario):
    """Step 7: --dry-run stores nothing; --since-last-run copies just the new object."""
    sc = scenario
    sc.require("again")
    s3 = s3_client(sc.front.boto3_kwargs())
    before = all_objects(s3, BUCKET)
    dry = sc.run("--dry-run")  # --to defaults to a bucket named like the source: `legacy`, not there yet
    r = dry.report
    assert dry.code in (0, 1) and r is not None, dry.desc
    assert sorted(r["would_copy"]) == sorted(sc.source) and r["listed"] == len(sc.source), dry.desc
    assert r["copied"] == 0 and r["failed"] == [], dry.desc
    assert SOURCE not in {b["Name"] for b in s3.list_buckets()["Buckets"]}, "a dry run created the bucket"
    assert all_objects(s3, BUCKET) == before

    sc.src.put_object(Bucket=SOURCE, Key="archive/after-cutover.txt", Body=b"written after the first import\n")
    sc.source = all_objects(sc.src, SOURCE)
    n = len(sc.source)
    tail = sc.run("--to", BUCKET, "--since-last-run")
    r = tail.complete(n - len(OLD))
    assert (r["copied"], r["skipped_old"], r["unchanged"]) == (1, len(OLD), n - len(OLD) - 1), tail.desc
    same_listing(all_objects(s3, BUCKET), sc.source, "after --since-last-run")
    sc.done.add("tail")


# -- step 8 -------------------------------------------------------------------------


@with_logs
def test_newer_in_walstore_kept_and_to_prefix(scenario: Scenario):
    """Step 8: a key rewritten through walstore is kept; --prefix/--to B/P/ with env credentials."""
    sc = scenario
    sc.require("tail")
    s3 = s3_client(sc.front.boto3_kwargs())
    mine = b"rewritten through walstore after the cut-over\n"
    s3.put_object(Bucket=BUCKET, Key="archive/notes.txt", Body=mine)
    r = sc.run("--to", BUCKET).complete(len(sc.source))
    assert r["copied"] == 0 and r["unchanged"] == len(sc.source) - 1, r
    assert [k["key"] for k in r["kept_newer"]] == ["archive/notes.txt"], r["kept_newer"]
    assert s3.get_object(Bucket=BUCKET, Key="archive/notes.txt")["Body"].read() == mine

    archive = {k: o for k, o in sc.source.items() if k.startswith("archive/")}
    moved = sc.run("--prefix", "archive/", "--to", "moved/old-archive/", creds=False,
                   extra_env={"WALSTORE_IMPORT_ACCESS_KEY_ID": sc.minio.access_key,
                              "WALSTORE_IMPORT_SECRET_ACCESS_KEY": sc.minio.secret_key})
    r = moved.complete(len(archive))
    assert r["copied"] == len(archive), moved.desc
    assert sum(c["source_objects"] for c in r["verification"].values()) == len(archive), moved.desc
    want = {"old-archive/" + k[len("archive/"):]: o for k, o in archive.items()}
    same_listing(all_objects(s3, "moved"), want, "--prefix archive/ --to moved/old-archive/")


# -- step 9 -------------------------------------------------------------------------

BAD = ["wrong-credentials", "unreachable", "no-credentials"]


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("case", BAD)
@with_logs
def test_bad_input_one_line_error(scenario: Scenario, case: str, mode: str):
    """Step 9: a one-line error, exit 1, nothing stored (no bucket `bad`)."""
    sc = scenario
    sc.require("source")
    data_dir = sc.dir / f"bad-{case}-{mode}" if mode == "offline" else None
    if data_dir is not None:
        data_dir.mkdir()  # an empty data directory: only the source can be wrong
    kw: dict = {"creds": True, "endpoint": None}
    if case == "wrong-credentials":
        kw["creds"] = creds_file(sc.dir / "wrong.cred", sc.minio.access_key, "not-the-secret")
    elif case == "unreachable":
        kw["endpoint"] = f"http://127.0.0.1:{free_port()}"
    else:
        kw["creds"] = False
    started_at = time.monotonic()
    line = sc.run("--to", "bad", data_dir=data_dir, **kw).one_line_error()
    assert time.monotonic() - started_at < 60, "the error took a minute"
    if case == "no-credentials":
        assert "credentials" in line, line
    if mode == "online":
        assert "bad" not in {b["Name"] for b in s3_client(sc.front.boto3_kwargs()).list_buckets()["Buckets"]}
    elif any(data_dir.iterdir()):  # opened (else left untouched: nothing stored either)
        cp = subprocess.run([walstore_exe(), "bucket", "list", "--data-dir", str(data_dir), "--json"],
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0 and '"bad"' not in cp.stdout, (cp.stdout, cp.stderr)


# -- step 10 ------------------------------------------------------------------------


def test_no_server_answered_5xx(scenario: Scenario):
    """Step 10: no walstore failed a request (WAL-G would retry a 5xx silently)."""
    scenario.require("imported")
    no_5xx(*scenario.servers.values())
