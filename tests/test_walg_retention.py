"""Server-side retention and delete protection, proven with WAL-G v3.0.9 and PostgreSQL 15.

The recommended Spilo set-up: the database host holds a ``wal-writer`` key
scoped to its cluster's prefix (it can archive and back up, never delete);
retention is the server's job. One scenario on one walstore (default delete
protection ``protect-required``), steps in file order:

1. ``walstore key create --role wal-writer --scope backups/spilo/ret``; WAL-G's
   ``archive_command`` and ``backup-push`` use that key.
2. Timeline 1: full B0, full B1, delta B2 (of B1); a standby restored from the
   archive streams, the old primary is shut down (planned failover), the
   standby is promoted to timeline 2 (history + ``.partial`` archived) and
   takes full B3. Rows in ``marks`` record what happened when.
3. A short policy (window 1 s, 2 backups, no age or branch grace): the plan
   releases exactly what ``storage/src/wal/horizon.rs`` predicts — B0, the WAL
   before B1, the WAL between B1's finish and B2's start (B1 is kept only as
   B2's delta ancestor, with its own WAL), the abandoned ``.partial`` — and
   keeps B1..B3, B1's own WAL, the path from B2 along timeline 1 → 2 to the head
   and the history file; ``retention run`` deletes exactly that.
4. Restores from every kept backup still work: B3 and B2 to the end of the
   archive (through the switch: the deleted ``.partial``'s rows come from
   timeline 2's segment), B2 to a recorded time, B1 to the end of its own WAL.
5. ``wal-g delete everything FORCE --confirm`` with the writer key changes
   nothing; with the root key under ``protect-required`` every required object
   survives (refusals show in ``walstore status``).
6. A second "primary" pushing other bytes for an archived segment gets 412 and
   is quarantined; the stored segment is unchanged; an identical re-push (an
   archive retry from the old primary's pg_wal) succeeds.
7. ``walstore check`` finds the store consistent; no request was answered 5xx.

A step whose prerequisite failed is skipped, not failed again.
Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_walg_retention.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from harness import Walstore, wait_for, walstore_exe
from pgcluster import PG_OS_USER, Cluster, Sandbox, print_log_tails, read_log, walg_sandbox, walstore_in
from test_walg import (
    BUCKET,
    REGION,
    archive_settings,
    backup_list,
    backup_push,
    key_prefix,
    list_keys,
    restore,
    segment_name,
    walg_settings,
)

CLUSTER = "ret"
PREFIX = key_prefix(CLUSTER)  # spilo/ret/wal/15/
TARGET = f"{BUCKET}/spilo/{CLUSTER}"  # what an operator types: the cluster, not WAL-G's repository
SEG = 16 * 1024 * 1024
KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
# Marks in the order they are written (the restores check which of them they see).
MARKS = ["before-B0", "after-B0", "after-B1", "after-B2", "after-pitr-point", "before-promotion",
         "after-promotion", "after-B3"]


def with_logs(fn):
    """On failure, print the tails of the PostgreSQL and walstore logs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            print_log_tails()
            raise

    return wrapper


def seg(lsn: int) -> int:
    return lsn // SEG


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    """walstore with its defaults (delete protection protect-required), one line per request."""
    yield from walstore_in(sandbox, "walstore-ret-", KEEP, region=REGION, buckets=[BUCKET])


def _client(store: Walstore, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region,
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def s3(store):
    """boto3 with the root key."""
    return _client(store, store.access_key, store.secret_key)


def cli(store: Walstore, *args: str, expect_ok: bool = True) -> tuple[int, dict, str]:
    """``walstore <args> --endpoint … --json`` with the root key from the environment.

    Returns (exit status, parsed JSON or {}, a description for assertion messages).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    env.update(WALSTORE_ROOT_ACCESS_KEY=store.access_key, WALSTORE_ROOT_SECRET_KEY=store.secret_key)
    cp = subprocess.run([walstore_exe(), *args, "--endpoint", store.endpoint, "--json"], env=env,
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = (f"walstore {' '.join(args)} exited {cp.returncode}\n"
           f"stdout:\n{cp.stdout[-6000:]}\nstderr:\n{cp.stderr[-3000:]}")
    try:
        v = json.loads(cp.stdout) if cp.stdout.strip() else {}
    except json.JSONDecodeError:
        v = {}
    if expect_ok:
        assert cp.returncode == 0, out
    return cp.returncode, v, out


def error_code(exc) -> str:
    return exc.response.get("Error", {}).get("Code", "")


class Scenario:
    """State shared by the steps."""

    def __init__(self, sb: Sandbox, store: Walstore, s3) -> None:
        self.sb, self.store, self.s3 = sb, store, s3
        self.clusters: list[Cluster] = []
        self.done: set[str] = set()
        self.backups: dict[str, str] = {}  # B0..B3 -> name
        self.lsn: dict[str, tuple[int, int]] = {}  # B0..B3 -> (start, finish)
        self.switch_lsn = 0  # where timeline 2 branches off timeline 1
        self.pitr_at = ""
        self.writer: dict = {}
        self.wenv = None  # envdir with the wal-writer key (the database host's)
        self.renv = None  # envdir with the root key (an operator's)
        self.primary: Cluster | None = None  # the old timeline-1 primary
        self.required: set[str] = set()  # the repository after retention ran

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def mark(self, c: Cluster, note: str) -> None:
        assert note in MARKS
        c.sql(f"INSERT INTO marks (note) VALUES ('{note}')")

    def name(self, b: str) -> str:
        return self.backups[b]


@pytest.fixture(scope="module")
def scenario(sandbox, store, s3):
    sc = Scenario(sandbox, store, s3)
    try:
        yield sc
    finally:
        for c in reversed(sc.clusters):
            c.destroy()


def marks_of(c: Cluster) -> list[str]:
    out = c.sql("SELECT coalesce(string_agg(note, ',' ORDER BY id), '') FROM marks")
    return out.split(",") if out else []


def backup_objects(keys, name: str) -> set[str]:
    """The keys of backup `name` (its folder and its sentinel)."""
    base = f"{PREFIX}basebackups_005/{name}"
    return {k for k in keys if k.startswith(base + "/") or k == base + "_backup_stop_sentinel.json"}


# -- steps 1-2: writer key, timeline 1 with three backups, failover, timeline 2 --------


@with_logs
def test_writer_key_archives_backups_and_failover(scenario: Scenario, store: Walstore, s3):
    """Steps 1-2: every upload with the scoped wal-writer key; B0, B1, B2 (delta) on TL1, B3 on TL2."""
    sc, sb = scenario, scenario.sb
    _, eff, out = cli(store, "policy", "show", BUCKET)
    assert eff["bucket_effective"]["protection"] == "protect-required", out
    _, k, out = cli(store, "key", "create", "--role", "wal-writer", "--scope", TARGET,
                    "--description", "database host of spilo/ret")
    assert k["role"] == "wal-writer" and k["scope"] == TARGET and k["id"] and k["secret"], out
    sc.writer = k
    sc.wenv = sb.envdir("ret-writer", walg_settings(store, CLUSTER, AWS_ACCESS_KEY_ID=k["id"],
                                                    AWS_SECRET_ACCESS_KEY=k["secret"]))
    sc.renv = sb.envdir("ret-root", walg_settings(store, CLUSTER))
    # The key stays inside its cluster: not even a sibling whose name shares the prefix.
    writer = _client(store, k["id"], k["secret"])
    from botocore.exceptions import ClientError
    for key in (f"spilo/{CLUSTER}2/wal/15/wal_005/000000010000000000000001.lz4", f"spilo/{CLUSTER}tail/x"):
        with pytest.raises(ClientError) as e:
            writer.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert error_code(e.value) == "AccessDenied", (key, e.value.response)

    p = Cluster(sb, "ret-primary")
    sc.clusters.append(p)
    sc.primary = p
    p.initdb()
    p.configure(**p.base_settings(), **archive_settings(sc.wenv))
    p.start()
    p.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text UNIQUE NOT NULL, "
          "at timestamptz NOT NULL DEFAULT clock_timestamp())")
    p.sql("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    sc.mark(p, "before-B0")
    p.switch_and_wait()
    sc.backups["B0"] = backup_push(sb, sc.wenv, p)
    sc.mark(p, "after-B0")
    p.switch_and_wait()
    sc.backups["B1"] = backup_push(sb, sc.wenv, p)
    sc.mark(p, "after-B1")
    p.sql("UPDATE filler SET h = md5(h) WHERE g % 10 = 0")
    p.switch_and_wait()
    sc.backups["B2"] = backup_push(sb, sc.wenv, p, WALG_DELTA_MAX_STEPS="1")
    b0, b1, b2 = sc.name("B0"), sc.name("B1"), sc.name("B2")
    for b in (b0, b1):
        assert re.fullmatch(r"base_0{7}1[0-9A-F]{16}", b), f"full backup name {b!r}"
    assert re.fullmatch(rf"base_0{{7}}1[0-9A-F]{{16}}_D_{b1[5:]}", b2), f"B2 {b2!r} is not a delta of B1 {b1!r}"
    sentinel = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}basebackups_005/{b2}_backup_stop_sentinel.json")
                          ["Body"].read())
    assert sentinel.get("DeltaFrom") == b1, sentinel
    sc.mark(p, "after-B2")
    sc.pitr_at = p.sql("SELECT clock_timestamp()")
    time.sleep(0.3)
    sc.mark(p, "after-pitr-point")
    p.switch_and_wait()

    # Failover (planned, like a Patroni switchover): a standby restored from the
    # archive streams from the primary; the primary shuts down (its last WAL reaches
    # the standby), the standby is promoted. The primary is stopped before the
    # promotion so it can never archive timeline 1 past the switch point.
    standby = restore(sb, sc.wenv, "LATEST", "ret-standby", hot_standby="on",
                      primary_conninfo=f"host={p.dir} port={p.PORT} user=postgres application_name=standby",
                      **archive_settings(sc.wenv))
    sc.clusters.append(standby)
    standby.start()
    wait_for(lambda: standby.try_sql("SELECT status FROM pg_stat_wal_receiver") == "streaming",
             timeout=60, interval=0.3, what="the standby to stream from the primary")
    sc.mark(p, "before-promotion")
    wait_for(lambda: standby.try_sql("SELECT count(*) FROM marks WHERE note = 'before-promotion'") == "1",
             timeout=60, interval=0.3, what="the standby to replay the last timeline-1 row")
    assert int(p.sql("SELECT failed_count FROM pg_stat_archiver")) == 0
    p.stop()
    standby.promote()
    standby.wait_promoted()
    first_tl2 = standby.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    assert first_tl2.startswith("00000002"), first_tl2
    partial = f"{PREFIX}wal_005/00000001{first_tl2[8:]}.partial.lz4"
    sc.mark(standby, "after-promotion")
    seg2 = standby.switch_and_wait()
    wait_for(lambda: {f"{PREFIX}wal_005/00000002.history.lz4", partial, f"{PREFIX}wal_005/{seg2}.lz4"}
             <= set(list_keys(s3, PREFIX + "wal_005/")),
             timeout=60, interval=0.5, what="the history file, the .partial and timeline 2's first segment")
    history = sb.mkdir("history") / "00000002.history"
    sb.walg(sc.wenv, "wal-fetch", "00000002.history", str(history))
    m = re.match(r"1\t([0-9A-F]+/[0-9A-F]+)\t", history.read_text())
    assert m, history.read_text()
    sc.switch_lsn = parse_lsn(m.group(1))
    assert segment_name(2, seg(sc.switch_lsn)) == first_tl2, (m.group(1), first_tl2)

    sc.backups["B3"] = backup_push(sb, sc.wenv, standby)
    assert sc.name("B3").startswith("base_00000002"), sc.name("B3")
    sc.mark(standby, "after-B3")
    standby.switch_and_wait()
    assert int(standby.sql("SELECT failed_count FROM pg_stat_archiver")) == 0
    assert marks_of(standby) == MARKS
    # Nothing writes to the repository any more (its listing must stay still).
    standby.stop()

    listed = {b["backup_name"]: b for b in backup_list(sb, sc.wenv)}
    assert set(listed) == set(sc.backups.values()), sorted(listed)
    for b, name in sc.backups.items():
        sc.lsn[b] = (listed[name]["start_lsn"], listed[name]["finish_lsn"])
    assert sc.lsn["B2"][1] < sc.switch_lsn < sc.lsn["B3"][0]
    # Timeline 1 is archived without a gap from segment 1 up to the switch.
    keys = set(list_keys(s3, PREFIX + "wal_005/"))
    for n in range(1, seg(sc.switch_lsn)):
        assert f"{PREFIX}wal_005/{segment_name(1, n)}.lz4" in keys, f"{segment_name(1, n)} was not archived"
    sc.done.add("setup")


# -- step 3: a short policy, the plan, the run -----------------------------------------


def predict_released(sc: Scenario, keys) -> set[str]:
    """What horizon.rs must release under window 1s / min 2 / no grace (see the module doc).

    Kept: B3 (window anchor), B2 (minimum of 2), B1 (B2's delta ancestor: its own
    WAL only); WAL from B2 along timeline 1 up to the switch, then timeline 2;
    history files. Everything else is released.
    """
    (s1, f1), (s2, _), switch = sc.lsn["B1"], sc.lsn["B2"], sc.switch_lsn
    keep_tl1 = [(seg(s1 - 1), seg(f1 - 1)), (seg(s2 - 1), seg(switch) - 1)]
    released = set()
    for key in keys:
        rel = key[len(PREFIX):]
        if rel.startswith("basebackups_005/"):
            if key in backup_objects(keys, sc.name("B0")):
                released.add(key)
            continue
        if re.fullmatch(r"wal_005/[0-9A-F]{8}\.history\.lz4", rel):
            continue
        m = re.fullmatch(r"wal_005/([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial|\.[0-9A-F]{8}\.backup)?\.lz4", rel)
        assert m, f"unexpected object in the repository: {key}"
        tl, n, kind = int(m.group(1), 16), int(m.group(2), 16) * 256 + int(m.group(3), 16), m.group(4) or ""
        if kind == ".partial":
            assert (tl, n) == (1, seg(switch)), key
            released.add(key)  # abandoned branch past its grace; timeline 2's segment holds the same WAL
        elif tl == 1:
            assert n <= seg(switch) - 1, f"timeline 1 archived past the switch point: {key}"
            if not any(lo <= n <= hi for lo, hi in keep_tl1):
                released.add(key)
        else:
            assert tl == 2 and n >= seg(switch), key
    return released


def unit_paths(u: dict) -> list[str]:
    if "Backup" in u:
        return u["Backup"]["paths"]
    return [u["Wal"]["path"]]


def repo_status(store: Walstore) -> tuple[dict, dict]:
    _, v, out = cli(store, "status", TARGET)
    repos = v.get("repositories", [])
    assert [r["prefix"] for r in repos] == [PREFIX], f"status of {TARGET} should show its one repository\n{out}"
    return v, repos[0]


@with_logs
def test_retention_plan_and_run(scenario: Scenario, store: Walstore, s3):
    """Step 3: the plan releases exactly the predicted set; the run deletes exactly it."""
    sc = scenario
    sc.require("setup")
    before = set(list_keys(s3, PREFIX))
    expected = predict_released(sc, before)
    # Everything is older than the window (1 s) and the branch grace (1 s).
    time.sleep(2.0)
    _, v, out = cli(store, "policy", "set", TARGET, "--recovery-window", "1s", "--min-backups", "2",
                    "--min-object-age", "0s", "--clock-skew", "0s", "--branch-grace", "1s",
                    "--archive-lag-grace", "0s", "--gc-delay", "0s")
    assert v["prefix"] == f"spilo/{CLUSTER}/", out
    assert v["policy"]["protection"] == "protect-required" and v["policy"]["enforce"] is False, out

    _, plan, out = cli(store, "retention", "plan", TARGET)
    assert [p["prefix"] for p in plan["plans"]] == [PREFIX], out
    pl = plan["plans"][0]
    assert pl["frozen"] == [], out
    units = pl["units"]
    planned = [PREFIX + p for u in units for p in unit_paths(u)]
    assert len(planned) == len(set(planned)), out
    b0 = sc.name("B0")
    assert [u["Backup"]["name"] for u in units if "Backup" in u] == [b0], out
    b0_unit = next(u["Backup"] for u in units if "Backup" in u)
    assert b0_unit["paths"][0] == f"basebackups_005/{b0}_backup_stop_sentinel.json", "units start with the sentinel"
    assert set(planned) == expected, (
        f"plan differs from the prediction\n  planned, not predicted: {sorted(set(planned) - expected)}"
        f"\n  predicted, not planned: {sorted(expected - set(planned))}")
    # The plan really releases WAL of each kind: before B1, between B1 and B2, the .partial.
    (s1, f1), (s2, _) = sc.lsn["B1"], sc.lsn["B2"]
    assert f"{PREFIX}wal_005/{segment_name(1, 1)}.lz4" in expected
    between = {f"{PREFIX}wal_005/{segment_name(1, n)}.lz4" for n in range(seg(f1 - 1) + 1, seg(s2 - 1))}
    assert between and between <= expected, (between, sorted(expected))
    assert any(k.endswith(".partial.lz4") for k in expected)
    reasons = {u["Wal"]["path"]: u["Wal"]["reason"] for u in units if "Wal" in u}
    assert reasons[f"wal_005/{segment_name(1, 1)}.lz4"] == "before the oldest backup kept for point-in-time recovery"
    assert all(r.startswith("partial segment") for p, r in reasons.items() if p.endswith(".partial.lz4"))

    # Why each backup is kept, and the required WAL ranges, exactly.
    _, repo = repo_status(store)
    assert repo["frozen"] == [] and repo["alerts"] == [], repo
    assert repo["head_timeline"] == 2 and repo["segment_size"] == SEG, repo
    roles = {b["name"]: b["role"] for b in repo["backups"]}
    assert roles == {b0: None, sc.name("B1"): "Ancestor", sc.name("B2"): "Pitr", sc.name("B3"): "Pitr"}, roles
    why = {b["name"]: " ".join(b["reasons"]) for b in repo["backups"]}
    assert "recovery window anchor" in why[sc.name("B3")], why
    assert "minimum of 2 backups" in why[sc.name("B2")], why
    assert f"delta ancestor of kept backup {sc.name('B2')}" in why[sc.name("B1")], why
    (s3_, f3) = sc.lsn["B3"]
    switch = sc.switch_lsn
    ranges = {(r["timeline"], r["from"], r["to"]) for r in repo["required_wal"]}
    assert ranges == {
        (1, seg(s1 - 1), seg(f1 - 1)),  # B1's own WAL
        (1, seg(s2 - 1), seg(sc.lsn["B2"][1] - 1)),  # B2's own WAL
        (2, seg(s3_ - 1), seg(f3 - 1)),  # B3's own WAL
        (1, seg(s2), seg(switch) - 1),  # from the oldest PITR backup (B2) along timeline 1 ...
        (2, seg(switch), None),  # ... and timeline 2 to the head
    }, repo["required_wal"]

    _, run, out = cli(store, "retention", "run", TARGET)
    assert [r["prefix"] for r in run["runs"]] == [PREFIX], out
    assert run["runs"][0]["deleted_objects"] == len(expected), out
    after = set(list_keys(s3, PREFIX))
    assert after == before - expected, (sorted(after - (before - expected)), sorted((before - expected) - after))
    for b in ("B1", "B2", "B3"):
        assert backup_objects(after, sc.name(b)), f"{b} lost its objects"
        assert backup_objects(after, sc.name(b)) == backup_objects(before, sc.name(b))
    assert not backup_objects(after, b0)
    assert f"{PREFIX}wal_005/00000002.history.lz4" in after
    _, audit, out = cli(store, "audit", "--limit", "1000")
    deleted = {f"{r['key']}" for r in audit["records"] if r["action"] == "retention-delete"}
    assert deleted == expected, out
    sc.required = after
    assert {b["backup_name"] for b in backup_list(sc.sb, sc.wenv)} == {sc.name(b) for b in ("B1", "B2", "B3")}

    # Nothing more to release; the window starts at B2 and reaches timeline 2's last segment.
    _, plan, out = cli(store, "retention", "plan", TARGET)
    assert plan["plans"][0]["units"] == [], out
    _, repo = repo_status(store)
    assert repo["frozen"] == [] and repo["alerts"] == [] and repo["report"]["gaps"] == [], repo
    windows = repo["report"]["windows"]
    assert [w["backup"] for w in windows] == [sc.name("B2")], windows
    assert repo["report"]["last_segment"][0].startswith("00000002"), repo["report"]
    sc.done.add("retention")


# -- step 4: restores from every kept backup ----------------------------------------


RESTORES = {
    # id: (backup, settings, marks expected)
    "B3-to-end": ("B3", {}, MARKS),
    # Through timeline 1 → 2: the rows after the switch's start come from
    # timeline 2's first segment (the .partial was released).
    "B2-to-end": ("B2", {}, MARKS),
    "B2-to-time": ("B2", {"recovery_target_action": "promote"}, MARKS[:MARKS.index("after-B2") + 1]),
    # B1 is kept as B2's base only: it restores to the end of its own WAL; the
    # released segment after it (holding "after-B1") is really gone.
    "B1-own-wal": ("B1", {}, MARKS[:MARKS.index("after-B0") + 1]),
}


@pytest.mark.parametrize("case", list(RESTORES))
@with_logs
def test_restore_from_every_kept_backup(scenario: Scenario, case):
    """Step 4: backup-fetch by name + restore_command (writer key), recovery_target_timeline latest."""
    sc = scenario
    sc.require("retention")
    b, settings, expected = RESTORES[case]
    settings = dict(settings, recovery_target_timeline="latest")
    if case == "B2-to-time":
        settings["recovery_target_time"] = sc.pitr_at
    r = restore(sc.sb, sc.wenv, sc.name(b), f"ret-restore-{case}", **settings)
    sc.clusters.append(r)
    try:
        r.start()
        r.wait_promoted()
        got = marks_of(r)
        assert got == expected, f"restore {case} from {sc.name(b)} saw {got}, expected {expected}"
        log = read_log(r.log)
        assert "consistent recovery state reached" in log
        if case == "B2-to-time":
            assert "recovery stopping before commit" in log, "recovery did not stop at the target time"
        assert r.timeline() == 3, "a restore promoted with timeline 2 in the archive starts timeline 3"
        assert r.sql("SELECT count(*) FROM filler") == "20000"
    finally:
        r.destroy()
        sc.clusters.remove(r)
    sc.done.add(f"restore-{case}")


# -- step 5: WAL-G's delete cannot remove what is required -----------------------------


@with_logs
def test_walg_delete_everything_keeps_required(scenario: Scenario, store: Walstore, s3):
    """Step 5: delete everything FORCE with the writer key, then with the root key."""
    sc = scenario
    sc.require("retention")
    before = set(list_keys(s3, PREFIX))
    assert before == sc.required, "the repository changed after retention ran"
    _, plan, out = cli(store, "retention", "plan", TARGET)
    deletable = {PREFIX + p for u in plan["plans"][0]["units"] for p in unit_paths(u)}
    required = before - deletable

    # The database host's key: no delete permission at all.
    writer = _client(store, sc.writer["id"], sc.writer["secret"])
    from botocore.exceptions import ClientError
    some_segment = min(k for k in before if "/wal_005/" in k and k.endswith(".lz4") and ".history" not in k)
    with pytest.raises(ClientError) as e:
        writer.delete_object(Bucket=BUCKET, Key=some_segment)
    assert error_code(e.value) == "AccessDenied", e.value.response
    cp = sc.sb.walg(sc.wenv, "delete", "everything", "FORCE", "--confirm", check=False)
    print(f"wal-g delete everything FORCE (writer key): exit {cp.returncode}\n{cp.stderr[-1500:]}")
    assert set(list_keys(s3, PREFIX)) == before, f"the writer key deleted objects\n{cp.stdout}\n{cp.stderr[-3000:]}"

    # An operator's root key under the default protect-required: required objects stay.
    cp = sc.sb.walg(sc.renv, "delete", "everything", "FORCE", "--confirm", check=False)
    print(f"wal-g delete everything FORCE (root key): exit {cp.returncode}\n{cp.stderr[-1500:]}")
    after = set(list_keys(s3, PREFIX))
    lost = required - after
    assert not lost, f"delete everything removed required objects: {sorted(lost)}\n{cp.stdout}\n{cp.stderr[-3000:]}"
    assert after <= before and before - after <= deletable
    assert f"{PREFIX}wal_005/00000002.history.lz4" in after
    v, _ = repo_status(store)
    refused = v["refused_deletes"]
    assert refused, f"no refused deletes reported after WAL-G's delete everything\n{cp.stderr[-3000:]}"
    # WAL-G asked to delete every object of the repository: each required one was
    # refused (and reported), so nothing else was asked for in vain.
    mine = {r["key"] for r in refused if r["principal"] == store.access_key}
    assert mine == required, (sorted(mine - required), sorted(required - mine))
    assert all(r["bucket"] == BUCKET and r["reason"] for r in refused), refused
    assert {b["backup_name"] for b in backup_list(sc.sb, sc.wenv)} == {sc.name(b) for b in ("B1", "B2", "B3")}
    sc.done.add("delete")


# -- step 6: a second primary's different bytes are refused --------------------------


@with_logs
def test_second_primary_is_refused_and_quarantined(scenario: Scenario, store: Walstore, s3):
    """Step 6: other bytes for an archived segment: 412 + quarantine; identical bytes: accepted."""
    sc, sb = scenario, scenario.sb
    sc.require("retention")
    old = sc.primary
    assert old is not None and not old.running()
    listing = set(list_keys(s3, PREFIX))
    name = segment_name(1, seg(sc.switch_lsn) - 1)  # the old primary's last full segment (required)
    key = f"{PREFIX}wal_005/{name}.lz4"
    head = s3.head_object(Bucket=BUCKET, Key=key)
    stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    original = old.data / "pg_wal" / name
    fetched = sb.mkdir("fetched") / name
    sb.walg(sc.wenv, "wal-fetch", name, str(fetched))
    assert original.read_bytes() == fetched.read_bytes(), "the old primary's pg_wal copy is not the archived segment"

    # An archive retry from the old primary's data directory: same bytes, success.
    sb.walg(sc.wenv, "wal-push", str(original))
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == head["ETag"]

    # A second primary's pg_wal with a segment of that name but other content.
    rogue = sb.mkdir("rogue-primary")
    wal_dir = rogue / "pg_wal"
    for d in (wal_dir, wal_dir / "archive_status"):
        d.mkdir(mode=0o700)
        shutil.chown(d, PG_OS_USER, PG_OS_USER)
    data = bytearray(original.read_bytes())
    for off in range(SEG // 2, SEG // 2 + 64):
        data[off] ^= 0x5A
    sb.write_file(wal_dir / name, bytes(data))
    _, q0, _ = cli(store, "status", TARGET)
    cp = sb.walg(sc.wenv, "wal-push", str(wal_dir / name), check=False)
    print(f"wal-g wal-push (different bytes): exit {cp.returncode}\n{cp.stderr[-1500:]}")
    assert cp.returncode != 0, f"wal-push of different bytes for {name} succeeded\n{cp.stdout}\n{cp.stderr[-3000:]}"
    assert re.search(r"PreconditionFailed|412", cp.stdout + cp.stderr), cp.stderr[-3000:]
    now = s3.head_object(Bucket=BUCKET, Key=key)
    assert now["ETag"] == head["ETag"] and now["ContentLength"] == head["ContentLength"]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == stored
    _, v, out = cli(store, "status", TARGET)
    assert v["quarantined"] >= 1 and v["quarantined"] > q0["quarantined"], out
    _, audit, out = cli(store, "audit", "--limit", "1000")
    assert any(r["action"] == "quarantine" and r["key"] == key and r["actor"] == sc.writer["id"]
               for r in audit["records"]), out
    # Refused bytes never count as WAL: the repository is unchanged.
    assert set(list_keys(s3, PREFIX)) == listing
    sc.done.add("split-brain")


# -- step 7 ---------------------------------------------------------------------------


@with_logs
def test_store_consistent_and_no_5xx(scenario: Scenario, store: Walstore):
    """Step 7: walstore check exits 0; the server answered no request with 5xx."""
    sc = scenario
    sc.require("setup")
    rc, v, out = cli(store, "check")
    assert rc == 0 and v.get("problems") == [], out
    log = read_log(store.log_path)
    assert re.search(r"\brequest\b.*\bstatus=\d{3}", log), "walstore logged no requests"
    errors = [ln for ln in log.splitlines() if re.search(r"status=5\d\d", ln)]
    assert not errors, f"{len(errors)} requests answered 5xx, e.g.:\n" + "\n".join(errors[:10])
