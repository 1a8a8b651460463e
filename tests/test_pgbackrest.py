"""pgBackRest (Debian package) with walstore as its S3 repository.

Scenario: stanza-create → archive_command = archive-push → full backup → more
rows + WAL switch → check → restore into a new data directory with archive-get
as restore_command → the restored cluster replays the archived WAL, promotes,
and has every row.

Why the scenario's walstore serves https: pgBackRest cannot speak plain HTTP
to S3. Its S3 driver always wraps the connection in TLS (`storageS3New`:
`httpClientNew(tlsClientNew(sckClientNew(host, port, ...), ...))`), and
`repo1-storage-verify-tls=n` only turns off certificate checks.
`test_pgbackrest_has_no_plain_http` pins that fact down. So walstore runs with
its native TLS (`serve --tls-cert/--tls-key`) and a certificate from a CA made
by the test (tlscerts.py), and pgBackRest verifies it (`repo1-storage-ca-file`);
nothing on the client side is weakened.

PostgreSQL and pgBackRest run as the `postgres` OS user (runuser); the cluster
listens on a Unix socket in the test's directory only (listen_addresses='').
"""
from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from harness import Walstore, missing_dependency, rmtree, tempdir, wait_for
from tlscerts import make_ca_and_cert

PG_BIN = Path(os.environ.get("WALSTORE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBACKREST = shutil.which("pgbackrest")
RUNUSER = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
STANZA = "demo"

pytestmark = [
    pytest.mark.skipif(PGBACKREST is None, reason=missing_dependency("pgbackrest is not installed (apt-get install pgbackrest)")),
    pytest.mark.skipif(not (PG_BIN / "initdb").is_file(),
                       reason=missing_dependency(f"PostgreSQL binaries not found in {PG_BIN}")),
    pytest.mark.skipif(os.geteuid() != 0 or RUNUSER is None,
                       reason=missing_dependency("needs root and runuser to run PostgreSQL as the postgres user")),
]


class Pg:
    """A scratch directory owned by `postgres`, and commands run as that user."""

    def __init__(self, work: Path):
        self.work = work
        self.port = random.randint(20000, 60000)  # only names the Unix socket; no TCP listener
        self.sock = work / "sock"
        self.conf = work / "pgbackrest.conf"
        self.env = {
            "PATH": f"{PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "LC_ALL": "C.UTF-8",
            "PGHOST": str(self.sock),
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
        }

    def run(self, *cmd: str, timeout: float = 120, ok: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([RUNUSER, "-u", "postgres", "--", *cmd], env=self.env, cwd=self.work,
                           capture_output=True, text=True, timeout=timeout)
        if ok:
            assert p.returncode == 0, (f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\n"
                                       f"stderr:\n{p.stderr[-4000:]}")
        return p

    def pgbackrest(self, *args: str, timeout: float = 180, ok: bool = True) -> subprocess.CompletedProcess:
        return self.run("pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}", *args, timeout=timeout, ok=ok)

    def sql(self, query: str) -> str:
        return self.run("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query, timeout=120).stdout.strip()

    def start(self, datadir: Path, log: Path) -> None:
        self.run("pg_ctl", "-D", str(datadir), "-l", str(log), "-w", "-t", "60", "start", timeout=90)

    def stop(self, datadir: Path) -> None:
        if (datadir / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(datadir), "-m", "fast", "-w", "-t", "60", "stop", timeout=90, ok=False)


def chown_postgres(path: Path) -> None:
    pw = pwd.getpwnam("postgres")
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


@pytest.fixture
def pg():
    work = tempdir("walstore-pgbr-")  # not under pytest's root-only tmp dir: postgres must reach it
    os.chmod(work, 0o700)
    for d in ("sock", "log", "lock", "spool"):
        (work / d).mkdir()
    chown_postgres(work)
    pg = Pg(work)
    yield pg
    for d in ("pgdata", "restored"):
        pg.stop(work / d)
    rmtree(work)


def write_pgbackrest_conf(pg: Pg, server, port: int, ca: Path | None, extra: str = "") -> None:
    pg.conf.write_text(f"""\
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=test
repo1-s3-endpoint=127.0.0.1
repo1-storage-port={port}
repo1-s3-uri-style=path
repo1-s3-region={server.region}
repo1-s3-key={server.access_key}
repo1-s3-key-secret={server.secret_key}
{f"repo1-storage-ca-file={ca}" if ca else ""}
repo1-retention-full=2
log-path={pg.work}/log
lock-path={pg.work}/lock
spool-path={pg.work}/spool
log-level-console=info
log-level-file=detail
start-fast=y
process-max=2
compress-type=lz4
{extra}

[{STANZA}]
pg1-path={pg.work}/pgdata
pg1-port={pg.port}
pg1-socket-path={pg.sock}
""")
    os.chmod(pg.conf, 0o600)
    chown_postgres(pg.conf)


def test_pgbackrest_version():
    out = subprocess.run([PGBACKREST, "version"], capture_output=True, text=True, timeout=30)
    print(out.stdout.strip())
    assert out.returncode == 0 and out.stdout.startswith("pgBackRest ")


def test_pgbackrest_has_no_plain_http(server, pg):
    """pgBackRest speaks TLS even with verify-tls off, so plain-HTTP walstore cannot serve it.

    This is why the scenario needs walstore's https. If this starts failing,
    pgBackRest learned plain HTTP.
    """
    write_pgbackrest_conf(pg, server, server.port, None, extra="repo1-storage-verify-tls=n\nio-timeout=1")
    p = pg.run("pgbackrest", f"--config={pg.conf}", "--repo=1", "repo-ls", timeout=120, ok=False)
    assert p.returncode != 0, p.stdout
    assert "TLS" in p.stderr + p.stdout or "SSL" in p.stderr + p.stdout, p.stderr + p.stdout


def test_backup_archive_restore(tmp_path, pg):
    work = pg.work
    # The CA file must be readable by `postgres` (pgBackRest runs as that user).
    ca, cert, key = make_ca_and_cert(work / "tls")
    chown_postgres(work / "tls")
    server = Walstore(data_dir=tmp_path / "data", buckets=["test"], tls_cert=cert, tls_key=key, ca=ca).start()
    try:
        assert server.endpoint.startswith("https://")
        _scenario(server, pg, ca)
    finally:
        for d in ("pgdata", "restored"):
            pg.stop(work / d)
        code = server.stop()
    assert code == 0, f"walstore exited with {code}; log {server.log_path}"


def _scenario(server: Walstore, pg: Pg, ca: Path) -> None:
    work = pg.work
    pgdata, restored = work / "pgdata", work / "restored"
    write_pgbackrest_conf(pg, server, server.port, ca)

    pg.run("initdb", "-D", str(pgdata), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
    with (pgdata / "postgresql.conf").open("a") as f:
        f.write(f"""
listen_addresses = ''
port = {pg.port}
unix_socket_directories = '{pg.sock}'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config={pg.conf} --stanza={STANZA} archive-push %p'
max_wal_size = 256MB
""")
    pg.start(pgdata, work / "pg.log")

    pg.pgbackrest("stanza-create")
    pg.pgbackrest("check")  # archive-push of a switched segment goes through walstore

    # ~14 MB of hard-to-compress rows, so data files and WAL segments exceed
    # pgBackRest's 5 MiB upload chunk and go multipart.
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)")
    pg.sql("INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 120000) g")
    pg.pgbackrest("backup", "--type=full", timeout=300)

    # Rows after the backup exist only in archived WAL.
    pg.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(120001, 125000) g")
    pg.sql("SELECT pg_switch_wal()")
    pg.pgbackrest("check")

    info = json.loads(pg.pgbackrest("info", "--output=json").stdout)
    assert info[0]["status"]["code"] == 0, info
    backups = info[0]["backup"]
    assert [b["type"] for b in backups] == ["full"]
    assert info[0]["archive"][0]["min"] and info[0]["archive"][0]["max"]

    # What pgBackRest stored, seen through S3.
    s3 = boto3.client("s3", **server.boto3_kwargs())
    objects = [o for p in s3.get_paginator("list_objects_v2").paginate(Bucket="test", Prefix="pgbackrest/")
               for o in p.get("Contents", [])]
    keys = [o["Key"] for o in objects]
    assert any(k.startswith(f"pgbackrest/archive/{STANZA}/") and k.endswith(".lz4") for k in keys), keys[:20]
    assert any(k.startswith(f"pgbackrest/backup/{STANZA}/") and k.endswith("backup.manifest") for k in keys)
    assert any("-" in o["ETag"] for o in objects), "expected at least one multipart object (> 5 MiB)"

    pg.stop(pgdata)

    restored.mkdir(mode=0o700)
    chown_postgres(restored)
    pg.pgbackrest(f"--pg1-path={restored}", "--archive-mode=off", "restore", timeout=300)
    auto = (restored / "postgresql.auto.conf").read_text()
    assert "archive-get" in auto and "restore_command" in auto, auto

    pg.start(restored, work / "restored.log")
    # Hot standby accepts connections during recovery: wait for the promotion
    # that follows the end of the archived WAL.
    wait_for(lambda: pg.sql("SELECT pg_is_in_recovery()") == "f", timeout=120, interval=0.5,
             what="the restored cluster to finish archive recovery")
    assert pg.sql("SELECT count(*) FROM t") == "125000"
    assert pg.sql("SELECT count(*) FROM t WHERE id > 120000") == "5000"
    log = (work / "restored.log").read_text()
    assert "restored log file" in log, log[-3000:]
    pg.stop(restored)
