"""PostgreSQL clusters and WAL-G runs for the WAL-G scenario (tests/test_walg.py).

The tests run as root, PostgreSQL refuses to: every PostgreSQL and WAL-G
process runs as the `postgres` OS user (``subprocess`` with ``user=``/``group=``),
inside one :class:`Sandbox` directory under /tmp that belongs to that user
(pytest's own tmp dirs are root-only). The sandbox holds a copy of the WAL-G
binary (``/root`` is not traversable for `postgres`), the envdir directories
WAL-G reads its settings from, and the clusters.

Clusters listen on a Unix socket only (``listen_addresses = ''``, socket in the
cluster's own directory), so no TCP port is taken and clusters never collide.
WAL-G is invoked exactly as Spilo does it: ``envdir <dir> wal-g <command>``,
with ``wal-g`` found on ``PATH`` (also from ``archive_command`` and
``restore_command``, which inherit the postmaster's environment).

Nothing here contacts a non-loopback address; every wait is bounded.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness import missing_dependency, wait_for, walg_exe, walg_missing

PG_BIN = Path(os.environ.get("WALSTORE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"


def missing_prerequisites() -> str | None:
    """Why the PostgreSQL scenario cannot run here, or None."""
    if os.geteuid() != 0:
        return "the WAL-G scenario runs PostgreSQL as the `postgres` user and must start as root"
    for exe in ("initdb", "pg_ctl", "postgres", "psql", "pgbench"):
        if not (PG_BIN / exe).is_file():
            return f"PostgreSQL 15 server binaries not found in {PG_BIN} (install postgresql-15)"
    if shutil.which("envdir") is None:
        return "envdir (daemontools) is not installed"
    try:
        import pwd

        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        return f"no `{PG_OS_USER}` OS user"
    return None


def tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note why there are none."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def read_log(path) -> str:
    """A log file's text without ANSI colour codes ("" if unreadable)."""
    try:
        return re.sub(r"\x1b\[[0-9;]*m", "", Path(path).read_text(errors="replace"))
    except OSError:
        return ""


#: The sandbox of the running WAL-G module (for failure reports).
current: "Sandbox | None" = None


def walg_sandbox(keep: bool) -> Iterator["Sandbox"]:
    """Body of a module fixture: skips without PostgreSQL or WAL-G, else yields a Sandbox and cleans it up."""
    global current
    why = missing_prerequisites()
    if why:
        pytest.skip(missing_dependency(why))
    exe = walg_exe()
    if exe is None:
        pytest.skip(walg_missing())
    sb = Sandbox(exe, keep=keep)
    current = sb
    try:
        yield sb
    finally:
        current = None
        sb.cleanup()


def walstore_in(sandbox: "Sandbox", prefix: str, keep: bool, *, extra_args: tuple[str, ...] = (), tls: bool = False,
                **kw) -> Iterator:
    """Body of a module fixture: a walstore logging one line per request (its log joins the
    sandbox's log tails), stopped at the end with exit status 0 asserted. `tls`: https with a
    CA made in its directory (`ca` on the yielded server). Other keywords go to Walstore."""
    from harness import Walstore, rmtree, tempdir
    d = tempdir(prefix)
    if tls:
        from tlscerts import make_ca_and_cert
        kw["ca"], kw["tls_cert"], kw["tls_key"] = make_ca_and_cert(d / "tls")
    s = Walstore(data_dir=d / "data", extra_args=["--log-level", "info,s3api=debug", *extra_args], **kw).start()
    sandbox.logs["walstore"] = s.log_path
    yield s
    code = s.stop()
    assert code == 0, f"walstore exited with {code}; log:\n{tail(s.log_path, 60)}"
    if not keep:
        rmtree(d)


def print_log_tails(failed_requests: bool = False) -> None:
    """Prints the tails of the current sandbox's logs (pytest shows them on failure)."""
    if current is None:
        return
    for label, path in list(current.logs.items()):
        text = "\n".join(read_log(path).splitlines()[-40:])
        print(f"\n===== tail of {label} log ({path}) =====\n{text}")
        if failed_requests and label == "walstore":
            # 404s are routine (WAL-G probes extensions); show the other failures.
            bad = [ln for ln in read_log(path).splitlines()
                   if re.search(r"status=(5\d\d|40[0-3]|409|41\d)|request failed", ln)]
            print("===== walstore: last failed requests (not 404) =====\n" + "\n".join(bad[-25:]))


class CommandFailed(AssertionError):
    """A command the scenario depends on exited non-zero (message has its output)."""


class Sandbox:
    """A directory owned by the `postgres` user holding everything the scenario runs."""

    def __init__(self, walg_exe: str, keep: bool = False) -> None:
        #: Keep directories and logs after the tests (post-mortems); processes are stopped anyway.
        self.keep = keep
        self.base = Path(tempfile.mkdtemp(prefix="walstore-pg-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.bin = self.base / "bin"
        self.home = self.base / "home"
        for d in (self.bin, self.home):
            d.mkdir()
        shutil.copy2(walg_exe, self.bin / "wal-g")
        os.chmod(self.bin / "wal-g", 0o755)
        self._chown(self.base, recursive=True)
        self._counter = 0
        # Logs the tests print when they fail: label -> path.
        self.logs: dict[str, Path] = {}

    # -- files --------------------------------------------------------------------

    @staticmethod
    def _chown(p: Path, recursive: bool = False) -> None:
        shutil.chown(p, PG_OS_USER, PG_OS_USER)
        if recursive:
            for root, dirs, files in os.walk(p):
                for n in dirs + files:
                    shutil.chown(os.path.join(root, n), PG_OS_USER, PG_OS_USER)

    def mkdir(self, name: str, mode: int = 0o700) -> Path:
        """A new empty directory `name` (made unique) owned by `postgres`."""
        self._counter += 1
        d = self.base / f"{name}-{self._counter}"
        d.mkdir(mode=mode)
        os.chmod(d, mode)
        self._chown(d)
        return d

    def write_file(self, path: Path, data: bytes | str, mode: int = 0o600) -> Path:
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(path, mode)
        self._chown(path)
        return path

    def envdir(self, name: str, variables: dict[str, str]) -> Path:
        """An envdir directory (one file per variable) readable only by `postgres`.

        This is how Spilo hands WAL-G its settings (``WALE_ENV_DIR``).
        """
        d = self.mkdir(f"env-{name}")
        for k, v in variables.items():
            self.write_file(d / k, v)
        return d

    # -- processes ----------------------------------------------------------------

    def base_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment: no AWS_* or PG* variables leak in from the test process."""
        env = {
            "PATH": f"{self.bin}:{PG_BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
        }
        env.update(extra or {})
        return env

    def run(self, args: list[str], *, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300, what: str | None = None) -> subprocess.CompletedProcess:
        """Runs a command as `postgres`; on failure (check=True) raises with its output."""
        try:
            cp = subprocess.run([str(a) for a in args], env=self.base_env(env), cwd=self.base,
                                user=PG_OS_USER, group=PG_OS_USER, extra_groups=[],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(f"{what or args} timed out after {timeout}s\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
        if check and cp.returncode != 0:
            raise CommandFailed(
                f"{what or ' '.join(map(str, args))} exited {cp.returncode}\n"
                f"stdout:\n{cp.stdout[-4000:]}\nstderr:\n{cp.stderr[-6000:]}")
        return cp

    def walg(self, envdir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess:
        """``envdir <envdir> wal-g <args>`` as `postgres` (variables in `env` come on top)."""
        return self.run(["envdir", envdir, "wal-g", *args], env=env, check=check, timeout=timeout,
                        what=f"wal-g {' '.join(args)}")

    def stray_pids(self, under: Path | None = None) -> list[int]:
        """Processes working in or naming a path under `under` (default: the whole sandbox).

        WAL-G's restore_command starts detached ``wal-g wal-prefetch`` processes
        (named with the cluster's pg_wal path) and an interrupted archive_command
        keeps the data directory as its cwd; those are ours to wait for or stop.
        """
        root = str(under or self.base)
        me = os.getpid()
        found = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == me:
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(p / "cwd")
            except OSError:
                continue
            if root in cmd or cwd == root or cwd.startswith(root + "/"):
                found.append(int(p.name))
        return found

    def reap(self, under: Path | None = None, grace: float = 15.0) -> list[int]:
        """Waits (bounded) for stray processes to finish, then SIGKILLs the rest by pid."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.stray_pids(under):
            time.sleep(0.2)
        killed = self.stray_pids(under)
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return killed

    def cleanup(self) -> None:
        """Ends stray processes; removes the sandbox unless `keep`."""
        self.reap()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)


class Cluster:
    """One PostgreSQL data directory (run as `postgres`, Unix socket only)."""

    PORT = 5432  # the socket lives in the cluster's own directory, so every cluster can use it

    def __init__(self, sb: Sandbox, name: str) -> None:
        self.sb = sb
        self.dir = sb.mkdir(name, mode=0o755)
        self.name = self.dir.name
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        sb.logs[f"postgres {self.name}"] = self.log

    # -- set-up -------------------------------------------------------------------

    def initdb(self) -> "Cluster":
        self.sb.run([PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--data-checksums",
                     "--no-sync", "--encoding=UTF8", "--locale=C"], what=f"initdb {self.name}")
        return self

    def make_empty_data_dir(self) -> Path:
        """For backup-fetch: an empty data directory owned by `postgres`, mode 0700."""
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, PG_OS_USER, PG_OS_USER)
        return self.data

    def configure(self, **settings: str | int) -> None:
        """Appends settings to postgresql.conf (a later line wins over an earlier one)."""
        lines = ["", f"# added by tests/pgcluster.py for {self.name}"]
        for k, v in settings.items():
            v = str(v).replace("'", "''")
            lines.append(f"{k} = '{v}'")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(lines) + "\n")

    def base_settings(self) -> dict[str, str | int]:
        """Where this cluster listens, plus settings that keep the tests small and fast."""
        return {
            "listen_addresses": "",
            "port": self.PORT,
            "unix_socket_directories": str(self.dir),
            "shared_buffers": "32MB",
            "max_connections": 20,
            "timezone": "UTC",
            "log_timezone": "UTC",
            "log_line_prefix": "%m [%p] ",
            # The scenario never crashes PostgreSQL; fsync off only saves disk time.
            "fsync": "off",
            "max_wal_size": "64MB",
            "min_wal_size": "32MB",
            "checkpoint_timeout": "30s",
            "wal_retrieve_retry_interval": "500ms",
        }

    def touch(self, name: str) -> None:
        self.sb.write_file(self.data / name, "")

    # -- running ------------------------------------------------------------------

    @property
    def pg_env(self) -> dict[str, str]:
        """libpq variables for WAL-G, psql and pgbench."""
        return {"PGHOST": str(self.dir), "PGPORT": str(self.PORT), "PGUSER": "postgres", "PGDATABASE": "postgres"}

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, timeout: int = 120) -> "Cluster":
        cp = self.sb.run([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", timeout, "start"],
                         check=False, timeout=timeout + 30)
        if cp.returncode != 0:
            raise CommandFailed(f"pg_ctl start {self.name} failed ({cp.returncode}): {cp.stdout}{cp.stderr}\n"
                                f"--- {self.log}:\n{tail(self.log, 60)}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stops the postmaster (fast, then immediate, then SIGKILL by pid); idempotent."""
        if not self.running():
            return
        for m in (mode, "immediate"):
            cp = self.sb.run([PG_BIN / "pg_ctl", "-D", self.data, "-m", m, "-w", "-t", 60, "stop"], check=False,
                             timeout=90)
            if cp.returncode == 0 or not self.running():
                return
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        """Stops the cluster, waits for its WAL-G helpers and removes its directory."""
        self.stop()
        self.sb.reap(self.dir)
        if not self.sb.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.sb.logs.pop(f"postgres {self.name}", None)

    def promote(self, timeout: int = 60) -> None:
        self.sb.run([PG_BIN / "pg_ctl", "-D", self.data, "-w", "-t", timeout, "promote"], timeout=timeout + 30,
                    what=f"pg_ctl promote {self.name}")

    # -- SQL ----------------------------------------------------------------------

    def sql(self, query: str, *, timeout: float = 120) -> str:
        """Runs `query` with psql and returns its unaligned, tuples-only output."""
        cp = self.sb.run([PG_BIN / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query],
                         env=self.pg_env, check=False, timeout=timeout)
        if cp.returncode != 0:
            raise CommandFailed(f"psql on {self.name} failed: {query!r}\n{cp.stderr}\n--- {self.log}:\n{tail(self.log)}")
        return cp.stdout.strip()

    def try_sql(self, query: str) -> str | None:
        try:
            return self.sql(query, timeout=10)
        except CommandFailed:
            return None

    def in_recovery(self) -> bool | None:
        v = self.try_sql("SELECT pg_is_in_recovery()")
        return None if v is None else v == "t"

    def wait_promoted(self, timeout: float = 180) -> None:
        """Waits until archive recovery has ended (the server left recovery)."""
        def done() -> bool:
            if not self.running():
                raise CommandFailed(f"{self.name} stopped during recovery\n--- {self.log}:\n{tail(self.log, 60)}")
            return self.in_recovery() is False
        try:
            wait_for(done, timeout=timeout, interval=0.3, what=f"{self.name} to finish recovery")
        except TimeoutError as e:
            raise CommandFailed(f"{e}\n--- {self.log}:\n{tail(self.log, 60)}") from None

    def timeline(self) -> int:
        """The timeline WAL is written on now (from the current WAL file name)."""
        return int(self.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)

    def pgbench_init(self, scale: int) -> None:
        self.sb.run([PG_BIN / "pgbench", "-i", "-q", "-s", scale, "--no-vacuum"], env=self.pg_env,
                    what=f"pgbench -i -s {scale} on {self.name}")

    # -- WAL ----------------------------------------------------------------------

    def segment_done(self, seg: str) -> bool:
        """Whether PostgreSQL considers WAL file `seg` archived.

        ``archive_status/<seg>.done`` is written by the archiver after a
        successful archive_command, and by ``wal-g wal-push`` for the extra
        ``.ready`` files it uploads in the same run. Once the file is recycled
        after a checkpoint neither the segment nor a ``.ready`` remains.
        """
        status = self.data / "pg_wal" / "archive_status"
        if (status / f"{seg}.done").exists():
            return True
        return not (status / f"{seg}.ready").exists() and not (self.data / "pg_wal" / seg).exists()

    def switch_wal(self) -> str:
        """Closes the current WAL file; returns its name (the one that becomes ready)."""
        return self.sql("SELECT pg_walfile_name(pg_switch_wal())")

    def wait_archived(self, seg: str, timeout: float = 120) -> None:
        try:
            wait_for(lambda: self.segment_done(seg), timeout=timeout, interval=0.2, what=f"{seg} archived by {self.name}")
        except TimeoutError as e:
            stats = self.try_sql("SELECT * FROM pg_stat_archiver")
            raise CommandFailed(f"{e}; pg_stat_archiver: {stats}\n--- {self.log}:\n{tail(self.log, 60)}") from None

    def switch_and_wait(self, timeout: float = 120) -> str:
        seg = self.switch_wal()
        self.wait_archived(seg, timeout)
        return seg
