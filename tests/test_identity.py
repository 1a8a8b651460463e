"""The identity check with real PostgreSQL 15 clusters and WAL-G v3.0.9.

One walstore (default identity check: enforce), bucket ``pgb``. Steps in file order:

1. Cluster A (its own ``initdb``) archives into ``spilo/shared/wal/15`` with every codec
   WAL-G can push (the envdir's ``WALG_COMPRESSION_METHOD`` changes between segments:
   lz4, zstd, brotli, lzma, none) and takes a full backup. ``walstore status --json``
   shows the repository's identity: A's system identifier (from
   ``pg_control_system()``), PostgreSQL 15, 16 MiB segments; every segment was verified
   (none opaque) and the codec mix lists all five codecs.
2. Cluster B (another ``initdb``) is pointed at the same prefix: its archiver's
   ``wal-push`` fails, a direct ``wal-push`` of its segment is refused naming both
   system identifiers, its ``backup-push`` fails and ``backup-list`` still shows only A's
   backup; the refused uploads are in the quarantine (once each, however often the
   archiver retries); A keeps archiving without a failure; ``walstore status`` and
   ``/metrics`` name the conflict.
3. A restore of A's backup, promoted (same system identifier, timeline 2), archives into
   the repository without a failure.
4. Cluster C pushes with client-side encryption (``WALG_PGP_KEY_PATH``, OpenPGP; the
   WAL-G binary the tests use is built without the ``libsodium`` tag, and libsodium's
   stream is just as unreadable) into another prefix: its segments are accepted as
   opaque (counted, nothing refused), and the repository learns its identity from the
   backup's ``metadata.json`` (WAL-G writes backup documents unencrypted), which
   matches C.
5. ``walstore repo reset-identity`` (audited) forgets A; then B's backup is accepted and
   its ``metadata.json`` teaches the identity; bad input gets a one-line error.

Run: ``$WALSTORE_VENV/bin/python -m pytest -q tests/test_identity.py``
(``WALSTORE_TEST_KEEP=1`` keeps the data directories and logs).
"""
from __future__ import annotations

import os
import re
import time

import pytest

from harness import wait_for
from pgcluster import Cluster, walg_sandbox, walstore_in
from test_walg import REGION, archive_settings, backup_list, backup_push, restore, with_logs

KEEP = bool(os.environ.get("WALSTORE_TEST_KEEP"))
BUCKET = "pgb"
SHARED = "spilo/shared/wal/15"  # the repository two clusters are pointed at
SECRET = "spilo/secret/wal/15"  # the encrypted one
#: WALG_COMPRESSION_METHOD -> the extension its segments get
CODECS = {"lz4": "lz4", "zstd": "zst", "brotli": "br", "lzma": "lzma", "none": "none"}


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(KEEP)


@pytest.fixture(scope="module")
def store(sandbox):
    yield from walstore_in(sandbox, "walstore-identity-", KEEP, region=REGION, buckets=[BUCKET])


class State:
    def __init__(self, sb, store) -> None:
        self.sb, self.store = sb, store
        self.clusters: list[Cluster] = []
        self.by_name: dict[str, Cluster] = {}
        self.done: set[str] = set()
        self.sysid: dict[str, str] = {}
        self.env = {}

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing}, which did not pass")

    def envdir(self, name: str, prefix: str, **extra: str):
        st = self.store
        self.env[name] = self.sb.envdir(name, {
            "AWS_ENDPOINT": st.endpoint,
            "AWS_REGION": REGION,
            "AWS_S3_FORCE_PATH_STYLE": "true",
            "WALG_DISABLE_S3_SSE": "true",
            "WALG_S3_PREFIX": f"s3://{BUCKET}/{prefix}",
            "AWS_ACCESS_KEY_ID": st.access_key,
            "AWS_SECRET_ACCESS_KEY": st.secret_key,
            **extra,
        })
        return self.env[name]

    def cluster(self, name: str, env) -> Cluster:
        c = Cluster(self.sb, name)
        self.clusters.append(c)
        self.by_name[name] = c
        c.initdb()
        c.configure(**c.base_settings(), **archive_settings(env))
        c.start()
        self.sysid[name] = c.sql("SELECT system_identifier FROM pg_control_system()")
        return c

    def status(self, prefix: str) -> dict:
        v = self.store.admin("status", f"{BUCKET}/{prefix}")
        repos = [r for r in v["repositories"] if r["prefix"] == prefix + "/"]
        assert len(repos) == 1, v
        return repos[0]


@pytest.fixture(scope="module")
def state(sandbox, store):
    s = State(sandbox, store)
    yield s
    for c in reversed(s.clusters):
        c.destroy()


def pgp_key(state: State):
    """An armored OpenPGP secret key without passphrase, readable by the postgres user."""
    home = state.sb.mkdir("gnupg")
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    state.sb.run([*gpg, "--quick-gen-key", "walstore-test <test@example.invalid>", "rsa2048", "cert,sign,encr", "never"],
                 what="gpg --quick-gen-key")
    cp = state.sb.run([*gpg, "--armor", "--export-secret-keys", "walstore-test"], what="gpg --export-secret-keys")
    assert "PGP PRIVATE KEY" in cp.stdout
    return state.sb.write_file(home / "walg.key", cp.stdout)


def failed_count(c: Cluster) -> int:
    return int(c.sql("SELECT failed_count FROM pg_stat_archiver"))


def metric_sum(store, name: str, **labels: str) -> float:
    code, body = store.get("/metrics")
    assert code == 200
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", body.decode(), re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@with_logs
def test_learns_the_identity_and_reads_every_codec(state: State):
    env = state.envdir("a", SHARED)
    a = state.cluster("a", env)
    a.sql("CREATE TABLE t (id int, pad text)")
    for i, method in enumerate(CODECS):
        (env / "WALG_COMPRESSION_METHOD").write_text(method)
        a.sql(f"INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series({i * 5000}, {i * 5000 + 4999}) g")
        a.switch_and_wait()
    (env / "WALG_COMPRESSION_METHOD").write_text("lz4")
    backup_push(state.sb, env, a)
    assert failed_count(a) == 0
    st = state.status(SHARED)
    ident = st["identity"]
    assert ident["system_identifier"] == state.sysid["a"], ident
    assert (ident["pg_version"], ident["segment_size"], ident["check"]) == ("15", "16MiB", "enforce"), ident
    assert ident["learned_from"].startswith(f"{SHARED}/wal_005/"), ident
    seen = ident["since_start"]
    assert seen["opaque"] == 0 and seen["conflicts"] == 0, seen
    # Every segment, every codec, plus the backup's metadata.json and sentinel.
    assert seen["verified"] >= len(CODECS) + 2, seen
    codecs = st["report"]["wal_codecs"]
    assert set(CODECS.values()) <= set(codecs), codecs
    state.done.add("a")


@with_logs
def test_another_cluster_is_refused_and_the_first_goes_on(state: State):
    state.require("a")
    a = state.by_name["a"]
    env_a = state.env["a"]
    env_b = state.envdir("b", SHARED)
    b = state.cluster("b", env_b)
    assert state.sysid["b"] != state.sysid["a"]
    b.sql("CREATE TABLE u AS SELECT g FROM generate_series(1, 20000) g")
    seg = b.switch_wal()
    wait_for(lambda: failed_count(b) >= 2, timeout=60, interval=0.5, what="B's archiver to fail twice")
    # A direct wal-push says why.
    cp = state.sb.walg(env_b, "wal-push", str(b.data / "pg_wal" / seg), check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    assert "identity-conflict" in out and state.sysid["a"] in out and state.sysid["b"] in out, out[-2000:]
    # The archiver retries (three times in a row, then after a pause); the quarantine keeps
    # each refused upload once.
    wait_for(lambda: failed_count(b) >= 3, timeout=90, interval=0.5, what="B's archiver to retry")
    # Its backup is refused too: backup-list shows only A's. (With archiving on, B's
    # pg_backup_stop would wait forever for the WAL it cannot archive; a clone whose
    # backups run without archiving is the case that reaches the backup documents.)
    b.stop()
    b.configure(archive_mode="off")
    b.start()
    before = [x["backup_name"] for x in backup_list(state.sb, env_a)]
    cp = state.sb.walg(env_b, "backup-push", str(b.data), env=b.pg_env, check=False, timeout=180)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out[-2000:]
    assert "identity-conflict" in out and state.sysid["b"] in out, out[-2000:]
    assert [x["backup_name"] for x in backup_list(state.sb, env_a)] == before
    b.stop()
    b.configure(**archive_settings(env_b))
    q = state.store.admin("quarantine", "list")["quarantined"]
    mine = [r for r in q if r["key"].startswith(SHARED + "/")]
    assert mine and all(r["reason"].startswith("identity-conflict") for r in mine), mine
    keys = [r["key"] for r in mine]
    assert len(keys) == len(set(keys)), f"a retried upload was quarantined twice: {keys}"
    assert any(k.endswith(f"wal_005/{seg}.lz4") for k in keys), keys
    assert any(k.endswith("metadata.json") for k in keys), keys
    # A is unaffected.
    for _ in range(2):
        a.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(1, 1000) g")
        a.switch_and_wait()
    assert failed_count(a) == 0
    st = state.status(SHARED)
    seen = st["identity"]["since_start"]
    assert seen["conflicts"] >= 3, seen
    assert state.sysid["b"] in seen["last_conflict"]["message"], seen
    assert st["identity"]["system_identifier"] == state.sysid["a"]
    assert any(a.startswith("another cluster:") for a in st["alerts"]), st["alerts"]
    assert metric_sum(state.store, "walstore_identity_conflicts_total", kind="system_identifier") >= 3
    assert metric_sum(state.store, "walstore_identity_checks_total", result="verified") >= 7
    state.done.add("b")


@with_logs
def test_a_promoted_restore_of_the_same_cluster_is_accepted(state: State):
    state.require("a")
    env_a = state.env["a"]
    r = restore(state.sb, env_a, "LATEST", "a-restored", **archive_settings(env_a))
    state.clusters.append(r)
    r.start()
    r.wait_promoted()
    assert r.timeline() == 2
    assert r.sql("SELECT system_identifier FROM pg_control_system()") == state.sysid["a"]
    r.sql("CREATE TABLE after_promotion AS SELECT g FROM generate_series(1, 5000) g")
    seg = r.switch_and_wait()
    assert seg.startswith("00000002"), seg
    assert failed_count(r) == 0
    assert state.status(SHARED)["identity"]["system_identifier"] == state.sysid["a"]
    r.stop()  # one cluster of A's lineage archiving is enough for what follows
    state.done.add("promoted")


@with_logs
def test_client_side_encryption_is_accepted_as_opaque(state: State):
    opaque_before = metric_sum(state.store, "walstore_identity_checks_total", result="opaque")
    key = pgp_key(state)
    env = state.envdir("c", SECRET, WALG_PGP_KEY_PATH=str(key))
    c = state.cluster("c", env)
    c.sql("CREATE TABLE s AS SELECT g FROM generate_series(1, 20000) g")
    c.switch_and_wait()
    c.sql("INSERT INTO s SELECT g FROM generate_series(1, 20000) g")
    c.switch_and_wait()
    assert failed_count(c) == 0
    st = state.status(SECRET)
    assert st["identity"]["since_start"]["opaque"] >= 2, st["identity"]
    assert st["identity"]["system_identifier"] is None, "learned from bytes it cannot read?"
    assert metric_sum(state.store, "walstore_identity_checks_total", result="opaque") >= opaque_before + 2
    backup_push(state.sb, env, c)
    ident = state.status(SECRET)["identity"]
    assert ident["system_identifier"] == state.sysid["c"], ident
    assert "basebackups_005/" in ident["learned_from"], ident
    c.sql("INSERT INTO s SELECT g FROM generate_series(1, 1000) g")
    c.switch_and_wait()
    assert failed_count(c) == 0


@with_logs
def test_reset_identity_is_explicit_and_audited(state: State):
    state.require("b")
    bad = state.store.admin("repo", "reset-identity", f"{BUCKET}/nothing/here", "--reason", "x", check=False)
    assert bad.get("code") == 1 and len(bad["error"].splitlines()) == 1 and "no identity" in bad["error"], bad
    bad = state.store.admin("repo", "reset-identity", BUCKET, "--reason", "x", check=False)
    assert bad.get("code") == 1 and len(bad["error"].splitlines()) == 1, bad
    bad = state.store.admin("policy", "set", f"{BUCKET}/{SECRET}", "--identity-check", "maybe", check=False)
    assert bad.get("code") == 1 and "enforce, warn or off" in bad["error"], bad
    pol = state.store.admin("policy", "set", f"{BUCKET}/{SECRET}", "--identity-check", "warn")
    assert pol["policy"]["identity_check"] == "warn", pol
    assert state.status(SECRET)["identity"]["check"] == "warn"
    # Cluster A is retired first (else its next segment would teach the identity again).
    state.by_name["a"].stop()
    out = state.store.admin("repo", "reset-identity", f"{BUCKET}/{SHARED}", "--reason", "cluster b replaces a")
    assert out["forgot"]["system_identifier"] == state.sysid["a"], out
    # B's pending segments have the names of A's (both started at segment 1): the
    # split-brain guard refuses those whatever the identity. Its backup goes in (past A's
    # backup names, so the completed-backup rule does not apply) and teaches the identity.
    b = state.by_name["b"]
    b.configure(archive_mode="off")
    b.start()
    for i in range(12):
        b.sql(f"CREATE TABLE v{i} AS SELECT g FROM generate_series(1, 1000) g")
        b.switch_wal()
    name = backup_push(state.sb, state.env["b"], b)
    ident = state.status(SHARED)["identity"]
    assert ident["system_identifier"] == state.sysid["b"], ident
    assert name in ident["learned_from"], ident
    audit = state.store.admin("audit", "--limit", "200")["records"]
    assert any(r["action"] == "identity-reset" and "cluster b replaces a" in r["reason"] for r in audit), audit[-5:]
    b.stop()
    time.sleep(0.1)
