#!/usr/bin/env python3
"""walstore against MinIO and against the machine's own limits, on loopback.

Started by benches/run.sh, which builds or installs every binary first and passes their
paths in the environment (WALSTORE_EXE, SEED_EXE, MINIO_EXE, WARP_EXE, S3LOAD_EXE,
WALG_EXE, PG_BIN). See benches/README.md for what every workload does.

Workloads (--only): P1 WAL-G wal-push; P2 warp put (P5: peak RSS during P2); P3 warp mixed;
P4 ListObjectsV2 scans (P7: restarts); P6 WAL-G backup-fetch + wal-fetch; P12 DeleteObjects
through the delete guard while /metrics is scraped; R1 replication backfill into MinIO
against warp PUTting the same objects into MinIO; R2 P1 and P3 with and without a
replication target; R3 `walstore rebuild` from R1's copy; I1 `walstore import` of R1's object
set from MinIO against warp GETting the same objects from that MinIO; T1 GET of a tiered 1 GiB
object through walstore (bytes from its MinIO target) against GET of the copy straight from that
MinIO; T2 eviction rate of 2000 replicated 1 MiB objects.

Rules this script keeps:
- Every server listens on 127.0.0.1 only; every client is pointed at 127.0.0.1; after each
  MinIO run its TCP/UDP sockets are checked for a non-loopback peer.
- Both servers keep their data under one --data-root (same filesystem), in a fresh
  directory per workload, with their default (durable) settings.
- Each workload runs walstore and MinIO alternately, rep by rep (W,M / M,W / ...); R2 runs
  walstore without and with a replication target alternately; I1 alternates the import and
  warp's reads of the same source; T1 alternates GETs through walstore and straight from MinIO.
- Every loop is bounded in count and time; every subprocess has a timeout; the run as a
  whole stops starting new workloads after --max-minutes.
"""
from __future__ import annotations

import argparse
import atexit
import datetime as dt
import http.client
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ACCESS_KEY = "benchadmin"
SECRET_KEY = "bench-secret-0123456789"
REGION = "us-east-1"
BUCKET = "bench"
WARP_BUCKET = "warp-benchmark-bucket"
REPL_BUCKET = "replica"  # the bucket on a MinIO replication target
REPL_TARGET = "site-b"   # the target's name in R2 (and its prefix in REPL_BUCKET)
REPL = "walstore_repl"   # the variant "walstore with a MinIO replication target added" (R1, R2)
NOID = "walstore_noid"   # the variant "walstore with --identity-check off" (X1)
IMPORT_BUCKET = "imported"  # I1: the walstore bucket `walstore import --to` fills
TIER_TARGET = "tier"     # T1, T2: the replication target tiering evicts to (and its prefix in REPL_BUCKET)
T1_KEY = "t1/tar_partitions/part_1.tar.lz4"  # a backup tar partition's name, outside a WAL-G repository
T1_PART = "20MiB"        # WAL-G's default S3 part size (WALG_S3_MAX_PART_SIZE)
T1_RANGE = "8MiB"        # T1's ranged GETs: the AWS CLI / SDK transfer managers' default chunk
T1_STREAMS = 4           # T1's ranged GETs in flight
WORKLOADS = ["P1", "P2", "P3", "P4", "P6", "P12", "R1", "R2", "R3", "I1", "T1", "T2", "X1"]
REPL_CONC = 4            # objects the replication worker sends at once (its default); warp matches it in R1
MIB = 1 << 20
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_USER = "postgres"

T_START = time.monotonic()


def log(msg: str) -> None:
    el = time.monotonic() - T_START
    print(f"[{el:7.1f}s] {msg}", file=sys.stderr, flush=True)


def env_path(name: str) -> str:
    v = os.environ.get(name, "")
    if not v:
        sys.exit(f"compare.py: {name} is not set (start me through benches/run.sh)")
    return v


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run(args, *, timeout: float, env=None, user: str | None = None, check=True, cwd=None,
        capture=True) -> subprocess.CompletedProcess:
    kw = {}
    if user:
        pw = pwd.getpwnam(user)
        kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    try:
        cp = subprocess.run([str(a) for a in args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=capture, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{args[0]} {' '.join(map(str, args[1:4]))}… timed out after {timeout}s") from e
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {cp.returncode}\n"
                           f"stdout: {(cp.stdout or '')[-2000:]}\nstderr: {(cp.stderr or '')[-3000:]}")
    return cp


def poll_until(status, t0: float, timeout: float, started, finished):
    """Calls `status()` every 0.2 s (bounded by `timeout` and a count) until `finished(st)`.
    Returns (first, done, last status): seconds since `t0` at which `started` and `finished`
    first held, each taken halfway between the start of the poll before and the end of the
    poll that saw it (`None` if never)."""
    first = done = None
    prev_start = t0
    st: dict = {}
    for _ in range(int(timeout / 0.2) + 1):
        ts = time.monotonic()
        st = status()
        te = time.monotonic()
        if first is None and started(st):
            first = (prev_start + te) / 2 - t0
        if finished(st):
            done = (prev_start + te) / 2 - t0
            break
        if te - t0 > timeout:
            break
        prev_start = ts
        time.sleep(max(0.0, 0.2 - (te - ts)))
    return first, done, st


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        st = c.getresponse().status
        c.close()
        return st
    except OSError:
        return None


def server_kind(variant: str) -> str:
    """The server a workload variant runs: REPL (with a replication target) and NOID (without
    the identity check) are walstores."""
    return "walstore" if variant in (REPL, NOID) else variant


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS, kept by the kernel) of a process, in MiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it is gone."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = s[s.rfind(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds used by this script's finished (waited-for) child processes."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------------ load monitor

class LoadMonitor(threading.Thread):
    """Samples the load average and the CPU used by processes outside this run's process
    tree every `interval` s, so the report can say when other work shared the machine."""

    def __init__(self, interval: float = 2.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (t, loadavg1, other cores)
        self.stop_ev = threading.Event()
        self.hz = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _procs():
        res = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                s = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            rest = s[s.rfind(")") + 2:].split()
            ppid = int(rest[1])
            cpu = int(rest[11]) + int(rest[12])
            res[int(p)] = (ppid, cpu)
        return res

    def _mine(self, procs):
        me = os.getpid()
        mine = set()
        for pid in procs:
            seen, q = 0, pid
            while q and q in procs and seen < 64:
                if q == me:
                    mine.add(pid)
                    break
                q = procs[q][0]
                seen += 1
        return mine

    def run(self):
        prev = self._procs()
        prev_t = time.monotonic()
        while not self.stop_ev.wait(self.interval):
            cur = self._procs()
            now = time.monotonic()
            mine = self._mine(cur)
            other = 0
            for pid, (_, cpu) in cur.items():
                if pid in mine or pid not in prev:
                    continue
                other += max(0, cpu - prev[pid][1])
            cores = other / self.hz / (now - prev_t)
            load1 = float(Path("/proc/loadavg").read_text().split()[0])
            self.samples.append((now - T_START, load1, cores))
            prev, prev_t = cur, now

    def window(self, t0: float, t1: float):
        xs = [s for s in self.samples if t0 <= s[0] <= t1]
        if not xs:
            return None
        return {"load1_max": max(s[1] for s in xs), "load1_mean": statistics.mean(s[1] for s in xs),
                "other_cores_mean": statistics.mean(s[2] for s in xs),
                "other_cores_max": max(s[2] for s in xs)}


# ------------------------------------------------------------------------ servers

class Server:
    """One server process on 127.0.0.1 with its own data directory."""

    def __init__(self, kind: str, exe: str, workdir: Path):
        self.kind = kind
        self.exe = exe
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.non_loopback: list[str] = []
        self.target: Server | None = None  # a MinIO replication target beside this walstore (R1, R2, T1, T2)
        self.serve_args: list[str] = []  # extra `walstore serve` flags (T1, T2: --tier-interval)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, data_dir: Path, timeout: float = 60.0, restart: bool = False) -> dict:
        """Starts the server; returns seconds from spawn to ready and to the first
        successful signed request."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        errlog = open(self.workdir / f"{self.kind}.log", "ab")
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        if self.kind == "walstore":
            env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "WALSTORE_ROOT_ACCESS_KEY": ACCESS_KEY,
                   "WALSTORE_ROOT_SECRET_KEY": SECRET_KEY}
            args = [self.exe, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--region", REGION,
                    "--bucket", BUCKET, *self.serve_args]
            t0 = time.monotonic()
            self.proc = subprocess.Popen([str(a) for a in args], env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=errlog)
            line = self._read_line(t0 + timeout)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line or "")
            if not m:
                self.stop()
                raise RuntimeError(f"walstore did not print its address: {line!r}")
            self.port = int(m.group(1))
            threading.Thread(target=self._drain, daemon=True).start()
            ready_path = "/health/ready"
        else:
            self.port, console = free_port(), free_port()
            env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "MINIO_ROOT_USER": ACCESS_KEY,
                   "MINIO_ROOT_PASSWORD": SECRET_KEY,
                   # No update checks, no call-home; everything else at its default.
                   "MINIO_UPDATE": "off", "MINIO_CALLHOME_ENABLE": "off"}
            args = [self.exe, "server", data_dir, "--address", f"127.0.0.1:{self.port}",
                    "--console-address", f"127.0.0.1:{console}", "--certs-dir", home / "certs"]
            t0 = time.monotonic()
            self.proc = subprocess.Popen([str(a) for a in args], env=env, stdin=subprocess.DEVNULL,
                                         stdout=errlog, stderr=errlog)
            ready_path = "/minio/health/ready"
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {errlog.name}")
            if http_status(self.port, ready_path, timeout=1.0) == 200:
                break
            time.sleep(0.005)
        else:
            self.stop()
            raise RuntimeError(f"{self.kind} not ready after {timeout}s")
        t_ready = time.monotonic() - t0
        # MinIO answers /minio/health/ready before its object layer is up (S3 requests get
        # 503 XMinioServerNotInitialized for a while), so "first successful request" is
        # measured separately: a signed ListObjectsV2 on the bucket, retried every 5 ms.
        if self.kind == "minio" and not restart:
            s3load("mkbucket", "-endpoint", self.endpoint, "-bucket", BUCKET)
        pr = s3load("probe", "-endpoint", self.endpoint, "-bucket", BUCKET, "-timeout", "30s")
        t_first = time.monotonic() - t0
        return {"ready_s": t_ready, "first_ok_s": t_first, "probe_tries": pr.get("tries")}

    def _read_line(self, deadline: float) -> str | None:
        import select
        assert self.proc and self.proc.stdout
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.05)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 4096)
                if not ch:
                    break
                buf += ch
                if b"\n" in buf:
                    return buf.decode(errors="replace")
        return buf.decode(errors="replace") or None

    def _drain(self):
        try:
            while self.proc and self.proc.stdout and self.proc.stdout.read(4096):
                pass
        except (OSError, ValueError):
            pass

    def rss(self) -> dict[str, float]:
        return proc_status(self.proc.pid) if self.proc else {}

    def reset_peak_rss(self) -> bool:
        """Resets the kernel's peak RSS (VmHWM) of the process to its current RSS (writing 5
        to /proc/PID/clear_refs, Linux >= 4.0), so that VmHWM read later is the peak since."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except (OSError, AttributeError):
            return False

    def check_sockets(self):
        """Records any socket of this process whose peer is not a loopback address."""
        if not self.proc:
            return
        for proto in ("-tnpH", "-unpH"):
            try:
                out = run(["ss", proto], timeout=10, check=False).stdout
            except (RuntimeError, FileNotFoundError):
                return
            for line in out.splitlines():
                if f"pid={self.proc.pid}," not in line:
                    continue
                cols = line.split()
                peer = cols[4] if len(cols) > 4 else ""
                host = peer.rsplit(":", 1)[0].strip("[]")
                if host not in ("127.0.0.1", "::1", "*", "0.0.0.0", "::", "::ffff:127.0.0.1") \
                        and not host.startswith("127."):
                    self.non_loopback.append(line.strip())

    def stop(self, timeout: float = 40.0):
        if not self.proc:
            return
        if self.kind == "minio":
            self.check_sockets()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


S3LOAD = ""


def s3load(*args: str, timeout: float = 900) -> dict:
    env = {"PATH": "/usr/bin:/bin", "S3LOAD_ACCESS_KEY": ACCESS_KEY, "S3LOAD_SECRET_KEY": SECRET_KEY}
    cp = run([S3LOAD, *args], timeout=timeout, env=env)
    return json.loads(cp.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ the benchmark

class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.root = Path(a.data_root)
        self.exe = {"walstore": env_path("WALSTORE_EXE"), "minio": env_path("MINIO_EXE")}
        self.warp = env_path("WARP_EXE")
        self.walg = os.environ.get("WALG_EXE", "")
        self.seed_exe = env_path("SEED_EXE")
        self.pg_bin = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
        self.pg_cache = Path(a.pg_cache)
        self.results: dict = {"workloads": {}, "notes": [], "rss": {}}
        self.deadline = T_START + a.max_minutes * 60
        self.mon = LoadMonitor()
        self.kinds = ["walstore", "minio"]
        self.started: list[Server] = []
        atexit.register(self.servers_alive)

    # -- helpers ------------------------------------------------------------------------

    def order(self, rep: int, kinds: list[str] | None = None):
        kinds = kinds or self.kinds
        return kinds if rep % 2 == 0 else list(reversed(kinds))

    def fresh(self, name: str) -> Path:
        d = self.root / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def trash(self, d: Path) -> None:
        """Moves a data directory aside; it is deleted after the comparison, outside its
        time (unlinking MinIO's 100,000 object directories takes minutes on a busy disk)."""
        t = self.root / ".trash"
        t.mkdir(exist_ok=True)
        if d.exists():
            d.rename(t / f"{d.name}-{time.monotonic_ns()}")

    def server(self, kind: str, name: str) -> Server:
        variant, kind = kind, server_kind(kind)
        srv = Server(kind, self.exe[kind], self.root / "logs" / name)
        if variant == NOID:
            srv.serve_args = ["--identity-check", "off"]
        self.started.append(srv)
        return srv

    def servers_alive(self) -> list[str]:
        """Stops every server this run started that is still running (a workload that
        failed half-way); returns their names."""
        alive = []
        for srv in self.started:
            if srv.proc and srv.proc.poll() is None:
                alive.append(f"{srv.kind} ({srv.workdir.name})")
                srv.stop()
        return alive

    def out_of_time(self, what: str) -> bool:
        if time.monotonic() > self.deadline:
            self.results["notes"].append(f"{what}: not run, --max-minutes {self.a.max_minutes} reached")
            log(f"SKIP {what}: time budget used up")
            return True
        return False

    def record(self, key: str, per_server: dict, extra: dict | None = None, t0: float | None = None):
        w = self.results["workloads"].setdefault(key, {})
        w["runs"] = per_server
        w["median"] = {k: {m: median([r.get(m) for r in v]) for m in v[0] if isinstance(v[0].get(m), (int, float))}
                       for k, v in per_server.items() if v}
        if extra:
            w.update(extra)
        if t0 is not None:
            w["seconds"] = time.monotonic() - t0
            w["load"] = self.mon.window(t0 - T_START, time.monotonic() - T_START)
        self.save()

    def save(self):
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        name = "quick.json" if self.a.quick else "latest.json"
        (out / name).write_text(json.dumps(self.results, indent=1, default=str))

    def walg_env(self, srv: Server, prefix: str, pgdata: Path, home: Path) -> dict:
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": f"{self.pg_bin}:/usr/bin:/bin", "HOME": str(home),
                "WALG_S3_PREFIX": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT": srv.endpoint,
                "AWS_S3_FORCE_PATH_STYLE": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "WALG_DISABLE_S3_SSE": "true", "PGDATA": str(pgdata)}

    # -- machine limits ---------------------------------------------------------------

    def machine_limits(self) -> dict:
        log("machine limits: single-core MD5 / SHA-256 (openssl speed), disk write+fdatasync")
        res = {}
        cp = run(["openssl", "speed", "-mr", "-seconds", "2", "-bytes", str(MIB), "md5", "sha256"], timeout=60)
        for line in cp.stdout.splitlines():
            # +F:<idx>:<alg>:<bytes/s for each size>
            if line.startswith("+F:"):
                parts = line.split(":")
                res[parts[2].lower().replace("-", "")] = float(parts[3]) / MIB
        d = self.fresh("disk-probe")
        disk = [s3load("disk", "-dir", str(d), "-size", self.a.disk_size, "-sync-every", "16MiB", timeout=300)
                for _ in range(2)]
        res["disk_write_fdatasync_mib_s"] = median([x["mib_per_sec"] for x in disk])
        res["disk_runs"] = [x["mib_per_sec"] for x in disk]
        shutil.rmtree(d)
        res["md5_mib_s"] = res.get("md5")
        res["sha256_mib_s"] = res.get("sha256")
        res["limit_mib_s"] = min(v for v in (res["md5_mib_s"], res["sha256_mib_s"],
                                             res["disk_write_fdatasync_mib_s"]) if v)
        log(f"  md5 {res['md5_mib_s']:.0f} MiB/s, sha256 {res['sha256_mib_s']:.0f} MiB/s, "
            f"disk {res['disk_write_fdatasync_mib_s']:.0f} MiB/s")
        return res

    # -- PostgreSQL fixture -------------------------------------------------------------

    def pg_fixture(self, scale: int, nseg: int) -> dict:
        """A stopped PostgreSQL 15 cluster of pgbench scale `scale` and >= `nseg` real WAL
        segments archived from it; built once, cached in --pg-cache."""
        base = self.pg_cache / f"pg15-s{scale}-w{nseg}"
        marker = base / "READY.json"
        if marker.exists():
            info = json.loads(marker.read_text())
            pgdata = Path(info["pgdata"])
            info["pgdata_bytes"] = sum(f.stat().st_size for f in pgdata.rglob("*")
                                       if f.is_file() and "pg_wal" not in f.relative_to(pgdata).parts)
            return info
        log(f"building the PostgreSQL fixture {base} (once; pgbench scale {scale}, {nseg} WAL segments)")
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        for d in (self.pg_cache, base):
            shutil.chown(d, PG_USER, PG_USER)
            os.chmod(d, 0o755)
        pgdata, wal, sock = base / "pgdata", base / "wal", base / "sock"
        for d in (wal, sock):
            d.mkdir()
            shutil.chown(d, PG_USER, PG_USER)
        pg = lambda *a, t=900: run([self.pg_bin / a[0], *a[1:]], timeout=t, user=PG_USER, cwd="/tmp",
                                   env={"PATH": f"{self.pg_bin}:/usr/bin:/bin", "LANG": "C.UTF-8"})
        pg("initdb", "-D", pgdata, "-U", PG_USER, "--auth=trust", t=300)
        with open(pgdata / "postgresql.conf", "a") as f:
            f.write(f"""
listen_addresses = ''
unix_socket_directories = '{sock}'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f {wal}/%f && cp %p {wal}/%f'
max_wal_size = 2GB
# Fixture generation only: the WAL content does not depend on these.
fsync = off
synchronous_commit = off
""")
        pg("pg_ctl", "-D", pgdata, "-l", base / "pg.log", "-w", "-t", "120", "start", t=180)
        try:
            psql = lambda sql: pg("psql", "-h", sock, "-d", "postgres", "-qAtc", sql, t=300)
            pg("pgbench", "-h", sock, "-i", "-s", str(scale), "-q", "postgres", t=1500)
            segs = lambda: sorted(p for p in os.listdir(wal) if re.fullmatch(r"[0-9A-F]{24}", p))
            # TPC-B transactions write little WAL (~2 segments per 20 s here), so the
            # segments come mostly from re-initialising (COPY, index builds, vacuum),
            # with TPC-B runs in between; the last step leaves the cluster at `scale`.
            for i in range(20):
                if len(segs()) > nseg:
                    break
                pg("pgbench", "-h", sock, "-n", "-c", "2", "-j", "2", "-T", "10", "postgres", t=120)
                pg("pgbench", "-h", sock, "-i", "-s", str(scale), "-q", "postgres", t=1500)
                log(f"  {len(segs())} segments archived")
            psql("select pg_switch_wal()")
            psql("checkpoint")
            time.sleep(2)
        finally:
            pg("pg_ctl", "-D", pgdata, "-w", "-t", "120", "-m", "fast", "stop", t=180)
        names = segs()[:nseg]
        if len(names) < nseg:
            raise RuntimeError(f"only {len(names)} WAL segments were archived")
        # What a base backup holds: pg_wal is left out of it (WAL-G skips its contents).
        size = sum(f.stat().st_size for f in pgdata.rglob("*")
                   if f.is_file() and "pg_wal" not in f.relative_to(pgdata).parts)
        info = {"segments": names, "wal_dir": str(wal), "pgdata": str(pgdata), "sock": str(sock),
                "pgdata_bytes": size, "scale": scale}
        marker.write_text(json.dumps(info))
        return info

    # -- P1: WAL-G wal-push ------------------------------------------------------------

    def p1_wal_push(self, fx: dict, key: str = "P1", kinds: list[str] | None = None):
        if self.out_of_time(key):
            return
        if not self.walg:
            self.results["notes"].append(f"{key}: WAL-G binary not found (set WALG_BIN); not run")
            return
        t0 = time.monotonic()
        segs = fx["segments"]
        kinds = kinds or self.kinds
        pgdata = self.fresh(f"{key.lower()}-pgdata")
        (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
        for s in segs:
            os.link(Path(fx["wal_dir"]) / s, pgdata / "pg_wal" / s)
        warm(pgdata / "pg_wal")
        runs = {k: [] for k in kinds}

        def one(kind: str, rep: int, srv: Server) -> dict:
            data = self.fresh(f"{key.lower()}-{kind}-data")
            self.start_server(kind, srv, data)
            env = self.walg_env(srv, "p1", pgdata, self.root / "walg-home")
            ts = time.monotonic()
            each = []
            for s in segs:
                t1 = time.monotonic()
                run([self.walg, "wal-push", pgdata / "pg_wal" / s], timeout=120, env=env)
                each.append((time.monotonic() - t1) * 1000)
            wall = time.monotonic() - ts
            r = {"wall_s": wall, "per_segment_ms": wall / len(segs) * 1000, "p50_ms": pct(each, 0.5),
                 "p99_ms": pct(each, 0.99), **srv.rss()}
            log(f"{key} {kind} rep {rep}: {wall:.2f}s for {len(segs)} wal-push (p50 {r['p50_ms']:.0f} ms, "
                f"p99 {r['p99_ms']:.0f} ms)")
            r.update(self.repl_summary(kind, srv))
            return r

        self.repeat(key, runs, one, kinds)
        shutil.rmtree(pgdata)
        self.record(key, runs, {"segments": len(segs)}, t0)

    def repeat(self, key: str, runs: dict, one, kinds: list[str] | None = None) -> None:
        """Runs `one(kind, rep, server)` for every repetition, the variants `kinds` (default:
        walstore, MinIO) alternating. A failed repetition is retried once (a fresh server, a
        fresh directory); a second failure is recorded as a note and that repetition is left
        out of the medians. When REPL is among `kinds`, every walstore of the workload gets a
        fresh MinIO replication target (`server.target`, running before `one` is called): the
        REPL variant adds it as a target (start_server), the plain walstore leaves it idle, so
        both share the machine with the same processes."""
        kinds = kinds or self.kinds
        for rep in range(self.a.reps):
            for kind in self.order(rep, kinds):
                def attempt(n: int, kind=kind, rep=rep):
                    srv = self.server(kind, f"{key.lower()}-{kind}-{rep}-{n}")
                    if REPL in kinds and srv.kind == "walstore":
                        srv.target = self.server("minio", f"{key.lower()}-{kind}-{rep}-{n}-target")
                    try:
                        if srv.target:
                            srv.target.start(self.fresh(f"{key.lower()}-{kind}-target"))
                            s3load("mkbucket", "-endpoint", srv.target.endpoint, "-bucket", REPL_BUCKET)
                        runs[kind].append(one(kind, rep, srv))
                    finally:
                        srv.stop()
                        if srv.target:
                            srv.target.stop()
                        # thousands of small files (P3): deleted after the run
                        self.clean(f"{key.lower()}-{kind}-", later=key.endswith("P3"))

                self.twice(f"{key} {kind} rep {rep}", attempt)

    def twice(self, what: str, attempt) -> bool:
        """Calls `attempt(1)`, and `attempt(2)` when that fails; a failure is logged and
        recorded as a note. Returns whether one attempt succeeded."""
        for n in (1, 2):
            try:
                attempt(n)
                return True
            except Exception as e:  # noqa: BLE001 - recorded, retried once
                msg = f"{what} attempt {n} failed: {str(e)[:300]}"
                log(msg)
                self.results["notes"].append(msg)
        return False

    def clean(self, prefix: str, later: bool = False) -> None:
        """Deletes the directories `prefix*` of the data root now (few large files: the disk
        may be small), or with `later` moves them aside to be deleted after the run."""
        for d in self.root.glob(f"{prefix}*"):
            if d.is_dir():
                if later:
                    self.trash(d)
                else:
                    shutil.rmtree(d, ignore_errors=True)

    def enough_disk(self, what: str, need: int) -> bool:
        """Whether `need` bytes are free in the data root; if not, a note says why `what` did
        not run."""
        free = shutil.disk_usage(self.root).free
        if free < need:
            self.results["notes"].append(f"{what}: not run, {need / 2**30:.1f} GiB free needed in "
                                         f"{self.root}, {free / 2**30:.1f} GiB free")
        return free >= need

    # -- replication (R1, R2, R3) ------------------------------------------------------

    def walstore_cli(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root), "WALSTORE_ROOT_ACCESS_KEY": ACCESS_KEY,
               "WALSTORE_ROOT_SECRET_KEY": SECRET_KEY}
        return run([self.exe["walstore"], *args], timeout=timeout, env=env)

    def start_server(self, kind: str, srv: Server, data: Path) -> dict:
        """Starts `srv` on `data`; the REPL variant then adds its MinIO as a replication target
        (`--deletes mirror`, default concurrency) as REPL_TARGET."""
        st = srv.start(data)
        if kind == REPL:
            st["journaled"] = self.replication_add(srv, REPL_TARGET, REPL_TARGET + "/")["journaled"]
        return st

    def replication_add(self, srv: Server, name: str, prefix: str, source: str | None = None) -> dict:
        """`walstore replication add` of srv.target (MinIO, root key in a credentials file),
        of every bucket or of `source` (BUCKET[/PREFIX])."""
        assert srv.target
        creds = self.credentials_file(srv)
        cp = self.walstore_cli("replication", "add", name, "--server", srv.endpoint, "--endpoint", srv.target.endpoint,
                               "--bucket", REPL_BUCKET, "--prefix", prefix, "--credentials-file", creds,
                               "--deletes", "mirror", *(["--source", source] if source else []), "--json")
        out = json.loads(cp.stdout)
        if out.get("probe") != "ok":
            raise RuntimeError(f"replication add {name}: probe {out.get('probe')!r}")
        return out

    @staticmethod
    def credentials_file(srv: Server) -> Path:
        """A credentials file (MinIO's root key) in srv's work directory, for the walstore
        `srv` to reach a MinIO: a replication target, or an import source."""
        creds = srv.workdir / "target-credentials"
        creds.write_text(f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n")
        creds.chmod(0o600)
        return creds

    def replication_status(self, srv: Server, name: str) -> dict:
        cp = self.walstore_cli("replication", "status", name, "--endpoint", srv.endpoint, "--json", timeout=30)
        return json.loads(cp.stdout)

    def replication_wait(self, srv: Server, name: str, objects: int, t0: float, timeout: float) -> dict:
        """Polls `replication status NAME` every 0.2 s (bounded by `timeout` and a count) until
        the backlog is empty and at least `objects` objects were replicated. Times are seconds
        since `t0`: the copy is taken as complete halfway between the start of the last poll
        that still saw a backlog and the end of the first that saw none."""
        rss = [0.0]

        def status() -> dict:
            st = self.replication_status(srv, name)
            rss[0] = max(rss[0], srv.rss().get("VmRSS", 0.0))
            return st
        first_copy, done, st = poll_until(status, t0, timeout, started=lambda st: st["replicated_objects"] > 0,
                                          finished=lambda st: st["backlog_objects"] == 0
                                          and st["replicated_objects"] >= objects)
        rss_max = rss[0]
        if done is None:
            raise RuntimeError(f"replication {name}: backlog {st.get('backlog_objects')} objects after {timeout:.0f}s "
                               f"(state {st.get('state')}, last error {st.get('last_error')})")
        return {"seconds": done, "first_copy_s": first_copy, "rss_during_copy_max": rss_max,
                "replicated_objects": st["replicated_objects"], "replicated_bytes": st["replicated_bytes"],
                "errors": sum((st.get("errors") or {}).values())}

    def repl_summary(self, kind: str, srv: Server) -> dict:
        """After an R2 measurement: the REPL variant's backlog when the load stopped, and the
        time until the copy caught up (bounded); nothing for the plain variant."""
        if kind != REPL:
            return {}
        st = self.replication_status(srv, REPL_TARGET)
        t0 = time.monotonic()
        w = self.replication_wait(srv, REPL_TARGET, st["replicated_objects"], t0, timeout=180)
        return {"repl_backlog_objects_end": st["backlog_objects"], "repl_backlog_mib_end": st["backlog_bytes"] / MIB,
                "repl_lag_s_end": st.get("lag_seconds"), "repl_drain_s": w["seconds"],
                "repl_objects": w["replicated_objects"], "repl_deletes": st.get("replicated_deletes"),
                "repl_errors": w["errors"]}

    def repl_sets(self) -> list[tuple[int, str]]:
        return [(self.a.repl_small, "1MiB"), (self.a.repl_large, "64MiB")]

    def repl_size(self) -> tuple[int, int]:
        """Objects and bytes of R1's object set (I1 imports the same set)."""
        return (sum(n for n, _ in self.repl_sets()),
                sum(n * int(size.removesuffix("MiB")) for n, size in self.repl_sets()) * MIB)

    def warp_set(self, srv: Server, tag: str, by_size: bool = False, read: bool = False) -> dict:
        """Uploads R1's object set with warp's own upload phase: `warp get --objects N` PUTs
        exactly N objects (REPL_CONC at a time, fewer if N is smaller) before its 1 s GET
        phase, and `--full` keeps every request, so the upload time is exact: per object size,
        last PUT end − first PUT start, summed over the sizes. `by_size` puts each size under
        its own prefix (`--prefix 1MiB`: `1MiB/<random>/<name>`).

        `read` (I1's reference, on a set uploaded `by_size`): `warp get --list-existing
        --prefix SIZE`, REPL_CONC at a time, for a.import_get_seconds per size. warp picks a
        random object for every GET and cannot read each object once, so per size the rate is
        bytes read / (last GET end − first GET start), and the set's time is that size's bytes
        of the set at that rate, summed over the sizes."""
        res = {"seconds": 0.0, "bytes": 0, "objects": 0}
        for n, size in self.repl_sets():
            if n == 0:
                continue
            each = int(size.removesuffix("MiB")) * MIB
            # warp gives every worker the same number of objects (rounded up), so N must divide.
            conc = REPL_CONC if read else min(REPL_CONC, n)
            if n % conc and not read:
                raise ValueError(f"R1: {n} objects of {size} do not divide among {conc} warp workers")
            bd = self.root / f"{tag}-{size}"
            phase = (["--list-existing", "--duration", f"{self.a.import_get_seconds}s"] if read else
                     ["--objects", str(n), "--obj.size", size, "--duration", "1s"])
            self.run_warp(srv, "get", [*phase, *(["--prefix", size] if by_size or read else []),
                                       "--concurrent", str(conc), "--full"], bd)
            st = mixed_stats(bd.with_suffix(".csv.zst"), only="GET" if read else "PUT")
            bd.with_suffix(".csv.zst").unlink(missing_ok=True)
            if read and (st["errors"] or not st["ops"] or st["bytes"] != st["ops"] * each):
                raise RuntimeError(f"warp read {st['ops']} {size} objects, {st['bytes']} bytes ({st['errors']} errors)")
            if not read and (st["ops"] != n or st["errors"]):
                raise RuntimeError(f"warp uploaded {st['ops']} of {n} {size} objects ({st['errors']} errors)")
            if read:
                res[f"gets_{size}"] = st["ops"]
                res[f"mib_s_{size}"] = st["bytes"] / MIB / st["seconds"]
            res["seconds"] += n * each / (st["bytes"] / st["seconds"]) if read else st["seconds"]
            res["bytes"] += n * each if read else st["bytes"]
            res["objects"] += n
        res["mib_s"] = res["bytes"] / MIB / res["seconds"]
        res["obj_s"] = res["objects"] / res["seconds"]
        return res

    def r1_r3_replication(self, rebuild: bool):
        """R1: time from `replication add` on a walstore holding the object set until its
        backlog is empty (the copy in MinIO), against warp PUTting the same set into a fresh
        MinIO directly; alternating by rep. R3 (`rebuild`): then the front is stopped and
        `walstore rebuild` fills an empty data directory from that copy."""
        key = "R1"
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        objects, total = self.repl_size()
        # Peak disk use: the front and the copy, then the copy and the rebuilt directory.
        if not self.enough_disk("R1/R3", 2 * total + 512 * MIB):
            return
        runs = {REPL: [], "minio": []}

        def one(kind: str, rep: int, srv: Server) -> dict:
            data = self.fresh(f"r1-{kind}-data")
            srv.start(data)
            s3load("mkbucket", "-endpoint", srv.endpoint, "-bucket", WARP_BUCKET)
            up = self.warp_set(srv, f"r1-{kind}-{rep}")
            if kind == "minio":  # the reference: the same objects PUT into MinIO directly
                r = {"seconds": up["seconds"], "mib_s": up["mib_s"], "obj_s": up["obj_s"], **srv.rss()}
                log(f"R1 warp → MinIO rep {rep}: {r['mib_s']:.1f} MiB/s, {r['obj_s']:.1f} obj/s "
                    f"({r['seconds']:.2f}s)")
                return r
            r = {"seed_mib_s": up["mib_s"], "seed_VmHWM": srv.rss().get("VmHWM")}
            ta = time.monotonic()
            add = self.replication_add(srv, "r1", "r1/")
            if add["journaled"] != objects:
                raise RuntimeError(f"replication add journaled {add['journaled']} objects, {objects} stored")
            w = self.replication_wait(srv, "r1", objects, ta, timeout=max(120.0, total / MIB / 5))
            r.update(w, mib_s=total / MIB / w["seconds"], obj_s=objects / w["seconds"], **srv.rss())
            # The same rate counted from the first object seen on the target (leaves out the
            # wait for the worker's next round after `add`).
            r["mib_s_from_first_copy"] = total / MIB / max(w["seconds"] - w["first_copy_s"], 0.01)
            listed = s3load("list", "-endpoint", srv.target.endpoint, "-bucket", REPL_BUCKET, "-prefix", "r1/",
                            "-timeout", "2m", timeout=150)
            if listed["keys"] != objects:
                raise RuntimeError(f"the copy holds {listed['keys']} objects, {objects} expected")
            log(f"R1 replication rep {rep}: {r['mib_s']:.1f} MiB/s, {r['obj_s']:.1f} obj/s ({w['seconds']:.2f}s, "
                f"first copy after {w['first_copy_s']:.2f}s), peak RSS {r.get('VmHWM', 0):.0f} MiB")
            if rebuild:
                srv.stop()
                shutil.rmtree(data)  # not needed any more; the disk may be small
                r.update(self.rebuild(srv, self.fresh(f"r1-{kind}-rebuild"), "r1/", objects, total))
            return r

        self.repeat(key, runs, one, [REPL, "minio"])
        self.record(key, runs, {"objects": objects, "bytes": total, "sets": self.repl_sets()}, t0)
        if rebuild:
            self.record("R3", {"walstore": [{k.removeprefix("rebuild_"): v for k, v in r.items()
                                             if k.startswith("rebuild_")} for r in runs[REPL]]},
                        {"objects": objects, "bytes": total})

    def rebuild(self, srv: Server, into: Path, prefix: str, objects: int, total: int) -> dict:
        """`walstore rebuild` of srv.target's copy into the empty directory `into`: wall time
        of the command (which ends with `walstore check`) and its own summary line."""
        assert srv.target
        ts = time.monotonic()
        cp = self.walstore_cli("rebuild", "--data-dir", into, "--endpoint", srv.target.endpoint,
                               "--bucket", REPL_BUCKET, "--prefix", prefix,
                               "--credentials-file", srv.workdir / "target-credentials",
                               timeout=max(300.0, total / MIB / 2))
        wall = time.monotonic() - ts
        m = re.search(r"rebuilt (\d+) objects \(([\d.]+) MiB\) in ([\d.]+)s \(([\d.]+) MiB/s", cp.stdout)
        c = re.search(r"walstore check: (\d+) objects, (\d+) problems", cp.stdout)
        if not m or int(m.group(1)) != objects or not c or int(c.group(2)) != 0:
            raise RuntimeError(f"rebuild: unexpected summary: {cp.stdout[-600:]!r}")
        r = {"rebuild_wall_s": wall, "rebuild_mib_s": total / MIB / wall, "rebuild_obj_s": objects / wall,
             "rebuild_own_s": float(m.group(3)), "rebuild_own_mib_s": float(m.group(4))}
        log(f"R3 rebuild: {objects} objects in {wall:.2f}s = {r['rebuild_mib_s']:.1f} MiB/s, "
            f"{r['rebuild_obj_s']:.1f} obj/s (its own summary: {m.group(0)})")
        shutil.rmtree(into, ignore_errors=True)
        return r

    def r2_replication_latency(self, fx: dict | None):
        """R2: P1 and P3 against walstore without and with a replication target, alternating."""
        if fx:
            self.p1_wal_push(fx, "R2-P1", ["walstore", REPL])
        self.p3_mixed("R2-P3", ["walstore", REPL])

    def x1_identity_cost(self, fx: dict | None):
        """X1: P1 against walstore without (`--identity-check off`) and with the identity
        check (the default, enforce), alternating: what reading every segment's first page
        costs a WAL-G archive_command."""
        if not fx:
            self.results["notes"].append("X1: no WAL segments (WAL-G or PostgreSQL missing); not run")
            return
        self.p1_wal_push(fx, "X1", [NOID, "walstore"])

    # -- I1: walstore import ------------------------------------------------------------

    def i1_import(self):
        """I1: per repetition a fresh MinIO (the source) seeded with R1's object set by warp,
        one prefix per size; then, alternating by rep, (a) `walstore import` of it into a fresh
        walstore (wall time of the CLI, which follows the server-side import to its end) and the
        same import again right after (must copy nothing), (b) warp GETting the same objects
        from that MinIO, 4 at a time (warp_set(read=True))."""
        key = "I1"
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        objects, total = self.repl_size()
        # Peak disk use: the source and the imported copy.
        if not self.enough_disk(key, 2 * total + 512 * MIB):
            return
        runs = {"walstore": [], "minio": []}
        for rep in range(self.a.reps):
            def attempt(n: int, rep=rep):
                src = self.server("minio", f"i1-source-{rep}-{n}")
                try:
                    src.start(self.fresh("i1-source-data"))
                    s3load("mkbucket", "-endpoint", src.endpoint, "-bucket", WARP_BUCKET)
                    seed = self.warp_set(src, f"i1-seed-{rep}", by_size=True)
                    res = {}
                    for kind in self.order(rep):
                        if kind == "walstore":
                            res[kind] = self.import_runs(src, f"i1-walstore-{rep}-{n}", objects, total)
                        else:
                            res[kind] = self.warp_set(src, f"i1-get-{rep}", read=True)
                            log(f"I1 warp get ← MinIO rep {rep}: {res[kind]['mib_s']:.1f} MiB/s, "
                                f"{res[kind]['obj_s']:.1f} obj/s ({res[kind]['seconds']:.2f}s for the set)")
                    res["minio"].update(seed_mib_s=seed["mib_s"], **src.rss())
                    for kind, r in res.items():
                        runs[kind].append(r)
                finally:
                    src.stop()
                    self.clean("i1-")

            self.twice(f"{key} rep {rep}", attempt)
        self.record(key, runs, {"objects": objects, "bytes": total, "sets": self.repl_sets(),
                                "get_seconds": self.a.import_get_seconds}, t0)

    def import_runs(self, src: Server, name: str, objects: int, total: int) -> dict:
        """A fresh walstore; `walstore import` of src's WARP_BUCKET into IMPORT_BUCKET, timed
        and checked (everything copied, nothing failed, every prefix verified); then the same
        command again, which must copy nothing."""
        srv = self.server("walstore", name)
        try:
            srv.start(self.fresh("i1-walstore-data"))
            r = {"start_VmHWM": srv.rss().get("VmHWM")}
            args = ["import", "--endpoint", src.endpoint, "--bucket", WARP_BUCKET, "--credentials-file",
                    self.credentials_file(srv), "--to", IMPORT_BUCKET, "--json", "--server", srv.endpoint]
            for run_ in ("first", "rerun"):
                ts = time.monotonic()
                cp = self.walstore_cli(*args, timeout=max(300.0, total / MIB / 2))
                wall = time.monotonic() - ts
                report = json.loads(cp.stdout)
                check_import(report, objects, total, copied=objects if run_ == "first" else 0,
                             what=f"import ({run_} run)")
                if run_ == "first":
                    r.update(wall_s=wall, mib_s=total / MIB / wall, obj_s=objects / wall, own_s=report["seconds"],
                             **srv.rss())
                else:
                    r.update(rerun_s=wall, rerun_own_s=report["seconds"], rerun_VmHWM=srv.rss().get("VmHWM"))
            log(f"I1 import ({name}): {r['mib_s']:.1f} MiB/s, {r['obj_s']:.1f} obj/s ({r['wall_s']:.2f}s, its own "
                f"{r['own_s']:.2f}s), re-run {r['rerun_s']:.2f}s, peak RSS {r.get('VmHWM', 0):.0f} MiB")
            return r
        finally:
            srv.stop()

    # -- T1, T2: tiering -----------------------------------------------------------------

    def tier_server(self, name: str) -> Server:
        """A fresh walstore whose tier worker runs every second, with a fresh MinIO beside it
        as `target` (bucket REPL_BUCKET made), both started."""
        srv = self.server("walstore", f"{name}-walstore")
        srv.serve_args = ["--tier-interval", "1s"]
        srv.target = self.server("minio", f"{name}-target")
        srv.target.start(self.fresh(f"{name}-target-data"))
        s3load("mkbucket", "-endpoint", srv.target.endpoint, "-bucket", REPL_BUCKET)
        srv.start(self.fresh(f"{name}-walstore-data"))
        return srv

    def tier_status(self, srv: Server) -> dict:
        cp = self.walstore_cli("tier", "status", "--endpoint", srv.endpoint, "--json", timeout=30)
        return json.loads(cp.stdout)

    def tier_evict(self, srv: Server, objects: int, total: int, timeout: float) -> dict:
        """Replicates BUCKET to srv.target (`replication add --source BUCKET`, then waits for
        an empty backlog), then `walstore tier set BUCKET --target TIER_TARGET --after 0s` and
        polls `tier status` every 0.2 s (bounded by `timeout` and a count) until `objects`
        objects and `total` bytes were evicted (evicted_objects, remote_bytes). Times as in
        replication_wait: seconds since `tier set` started, taken halfway between the last
        poll that still saw too little and the first that saw all (`first_evict_s`: the first
        eviction). The peak RSS is reset right before `tier set`, so `evict_VmHWM` is the
        peak during the eviction."""
        ta = time.monotonic()
        self.replication_add(srv, TIER_TARGET, TIER_TARGET + "/", source=BUCKET)
        rw = self.replication_wait(srv, TIER_TARGET, objects, ta, timeout=max(120.0, total / MIB / 5))
        r = {"replication_s": rw["seconds"], "repl_mib_s": total / MIB / rw["seconds"],
             "setup_VmHWM": srv.rss().get("VmHWM"), "hwm_reset": srv.reset_peak_rss()}
        t0 = time.monotonic()
        self.walstore_cli("tier", "set", BUCKET, "--target", TIER_TARGET, "--after", "0s", "--endpoint", srv.endpoint,
                          "--json")
        first, done, st = poll_until(lambda: self.tier_status(srv), t0, timeout,
                                     started=lambda st: st.get("evicted_objects", 0) > 0,
                                     finished=lambda st: st.get("evicted_objects", 0) >= objects
                                     and st.get("remote_bytes", 0) >= total)
        if done is None:
            raise RuntimeError(f"tiering: {st.get('evicted_objects')} of {objects} objects, {st.get('remote_bytes')} of "
                               f"{total} bytes evicted after {timeout:.0f}s (passes {st.get('passes')}, last error "
                               f"{st.get('last_error')!r}); see {srv.workdir / 'walstore.log'}")
        if st.get("evicted_objects") != objects or st.get("remote_bytes") != total or st.get("last_error"):
            raise RuntimeError(f"tiering: evicted {st.get('evicted_objects')} objects / {st.get('remote_bytes')} bytes, "
                               f"expected {objects} / {total} (last error {st.get('last_error')!r})")
        r.update(evict_s=done, first_evict_s=first, evict_VmHWM=srv.rss().get("VmHWM"),
                 remote_blobs=st.get("remote_blobs"), tier_passes=st.get("passes"))
        return r

    def t1_tiered_get(self):
        """T1: one walstore holding a backup-sized object (multipart upload in WAL-G's 20 MiB
        parts), replicated to MinIO and evicted (`tier set --after 0s`). Then, alternating rep
        by rep, GETs of it through walstore (its bytes stream from MinIO) and GETs of its copy
        straight from MinIO, by the same client (`s3load get`): one GET of the whole object,
        and ranged GETs of T1_RANGE, T1_STREAMS at a time. Before the eviction the same GETs of
        the local object, for reference. The content is compared (SHA-256) on all three paths
        once (untimed), and the blob files must shrink by the object's size."""
        key = "T1"
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        size = self.a.tier_object_mib * MIB
        # Peak disk use: the object in walstore and in MinIO.
        if not self.enough_disk(key, 2 * size + 512 * MIB):
            return
        runs: dict[str, list] = {"tiered": [], "minio": [], "local": []}
        setup: dict = {}
        srv = None
        try:
            srv = self.tier_server("t1")
            data = self.root / "t1-walstore-data"
            up = s3load("mpput", "-endpoint", srv.endpoint, "-bucket", BUCKET, "-key", T1_KEY, "-size",
                        f"{self.a.tier_object_mib}MiB", "-part-size", T1_PART, "-concurrency", "4", "-timeout", "10m",
                        timeout=700)
            setup.update(put_mib_s=up["mib_per_sec"], parts=up["parts"])
            where = {"tiered": (srv.endpoint, BUCKET, T1_KEY), "local": (srv.endpoint, BUCKET, T1_KEY),
                     "minio": (srv.target.endpoint, REPL_BUCKET, f"{TIER_TARGET}/{BUCKET}/{T1_KEY}")}

            def get(kind: str, streams: int, sha: bool = False) -> dict:
                """One `s3load get`; also the CPU seconds per GiB that walstore, MinIO and the
                client used meanwhile (cpu_walstore, cpu_minio, cpu_client)."""
                ep, bucket, k = where[kind]
                procs = {"walstore": srv.proc.pid, "minio": srv.target.proc.pid}
                c0 = {n: proc_cpu(pid) for n, pid in procs.items()}
                cc = children_cpu()
                g = s3load("get", "-endpoint", ep, "-bucket", bucket, "-key", k, "-streams", str(streams),
                           "-range-size", T1_RANGE, *(["-sha256"] if sha else []), "-timeout", "5m", timeout=330)
                gib = size / 2**30
                g.update({f"cpu_{n}": (proc_cpu(pid) - c0[n]) / gib for n, pid in procs.items()},
                         cpu_client=(children_cpu() - cc) / gib)
                if g["bytes"] != size:
                    raise RuntimeError(f"T1 {kind}: GET returned {g['bytes']} bytes, {size} expected")
                return g

            def keep(r: dict, g: dict, streams: int) -> None:
                for m in ("mib_per_sec", "ttfb_ms", "cpu_walstore", "cpu_minio", "cpu_client"):
                    r[f"{m.replace('mib_per_sec', 'mib_s')}_{streams}"] = g[m]

            sums = {"local": get("local", 1, sha=True)["sha256"]}
            for rep in range(self.a.reps):
                r = {}
                for streams in (1, T1_STREAMS):
                    keep(r, get("local", streams), streams)
                runs["local"].append(r)
                log(f"T1 local GET rep {rep}: {r['mib_s_1']:.0f} MiB/s one stream, "
                    f"{r[f'mib_s_{T1_STREAMS}']:.0f} MiB/s {T1_STREAMS} streams")
            before = blob_bytes(data)
            setup.update(self.tier_evict(srv, 1, size, timeout=120))
            after = blob_bytes(data)
            setup.update(blobs_before=before, blobs_after=after)
            log(f"T1 setup: PUT {setup['put_mib_s']:.0f} MiB/s ({up['parts']} parts), replicated in "
                f"{setup['replication_s']:.2f}s, evicted {setup['evict_s']:.2f}s after `tier set`; blob files "
                f"{before / MIB:.1f} → {after / MIB:.1f} MiB")
            if before - after < size:
                raise RuntimeError(f"T1: the blob files shrank by {before - after} bytes, {size} evicted")
            sums["tiered"] = get("tiered", 1, sha=True)["sha256"]
            sums["minio"] = get("minio", 1, sha=True)["sha256"]
            if len(set(sums.values())) != 1:
                raise RuntimeError(f"T1: the object's SHA-256 differs between the paths: {sums}")
            setup["hwm_reset_gets"] = srv.reset_peak_rss()
            for rep in range(self.a.reps):
                res: dict[str, dict] = {"tiered": {}, "minio": {}}
                for streams in (1, T1_STREAMS):
                    for kind in self.order(rep, ["tiered", "minio"]):
                        keep(res[kind], get(kind, streams), streams)
                w, m = res["tiered"], res["minio"]
                for streams in (1, T1_STREAMS):
                    w[f"ratio_{streams}"] = w[f"mib_s_{streams}"] / m[f"mib_s_{streams}"]
                w.update(srv.rss())  # VmHWM: the peak since the reset before the tiered GETs
                m.update(srv.target.rss())
                runs["tiered"].append(w)
                runs["minio"].append(m)
                log(f"T1 rep {rep}: one stream {w['mib_s_1']:.0f} vs {m['mib_s_1']:.0f} MiB/s ({w['ratio_1']:.2f}), "
                    f"{T1_STREAMS} streams {w[f'mib_s_{T1_STREAMS}']:.0f} vs {m[f'mib_s_{T1_STREAMS}']:.0f} MiB/s "
                    f"({w[f'ratio_{T1_STREAMS}']:.2f}); walstore peak RSS {w.get('VmHWM', 0):.0f} MiB")
            st = self.tier_status(srv)
            setup.update(remote_reads=st.get("remote_reads"), remote_read_bytes=st.get("remote_read_bytes"),
                         remote_read_failures=st.get("remote_read_failures"))
            if st.get("remote_read_failures") or st.get("remote_bytes") != size:
                raise RuntimeError(f"T1: after the GETs remote_read_failures {st.get('remote_read_failures')}, "
                                   f"remote_bytes {st.get('remote_bytes')} (expected 0, {size})")
        finally:
            if srv:
                srv.stop()
                if srv.target:
                    srv.target.stop()
            self.clean("t1-")
        self.record(key, runs, {"bytes": size, "setup": setup, "streams": T1_STREAMS, "range": T1_RANGE,
                                "part": T1_PART}, t0)

    def t2_eviction(self):
        """T2: per repetition a fresh walstore and MinIO target; N objects of 1 MiB (random,
        no two alike) PUT into walstore, replicated, then `tier set --after 0s`; time until
        `tier status` shows all N evicted (tier_evict). The blob files must shrink by their
        bytes, and one of the objects is read back through walstore."""
        key = "T2"
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        n, each = self.a.tier_objects, MIB
        total = n * each
        if not self.enough_disk(key, 2 * total + 512 * MIB):
            return
        runs: dict[str, list] = {"walstore": []}
        for rep in range(self.a.reps):
            def attempt(k: int, rep=rep):
                srv = None
                try:
                    srv = self.tier_server(f"t2-{rep}-{k}")
                    data = self.root / f"t2-{rep}-{k}-walstore-data"
                    seed = s3load("seed", "-endpoint", srv.endpoint, "-bucket", BUCKET, "-prefix", "t2/", "-count",
                                  str(n), "-size", "1MiB", "-concurrency", "4", "-timeout", "10m", timeout=700)
                    before = blob_bytes(data)
                    r = {"seed_mib_s": seed["per_sec"] * each / MIB}
                    r.update(self.tier_evict(srv, n, total, timeout=max(120.0, n / 10)))
                    after = blob_bytes(data)
                    if before - after < total:
                        raise RuntimeError(f"T2: the blob files shrank by {before - after} bytes, {total} evicted")
                    g = s3load("get", "-endpoint", srv.endpoint, "-bucket", BUCKET, "-key", "t2/" + wal_key(0),
                               "-timeout", "1m", timeout=90)
                    if g["bytes"] != each:
                        raise RuntimeError(f"T2: GET of an evicted object returned {g['bytes']} bytes")
                    r.update(obj_s=n / r["evict_s"], mib_s=total / MIB / r["evict_s"],
                             blobs_before=before, blobs_after=after, **srv.rss())
                    if r["first_evict_s"] is not None and r["evict_s"] > r["first_evict_s"]:
                        r["obj_s_from_first"] = n / (r["evict_s"] - r["first_evict_s"])
                    runs["walstore"].append(r)
                    log(f"T2 rep {rep}: {n} objects evicted in {r['evict_s']:.2f}s = {r['obj_s']:.0f} obj/s, "
                        f"{r['mib_s']:.0f} MiB/s (first after {r['first_evict_s']:.2f}s); peak RSS during eviction "
                        f"{r.get('evict_VmHWM') or 0:.0f} MiB; blob files {before / MIB:.0f} → {after / MIB:.1f} MiB")
                finally:
                    if srv:
                        srv.stop()
                        if srv.target:
                            srv.target.stop()
                    self.clean("t2-")

            self.twice(f"{key} rep {rep}", attempt)
        self.record(key, runs, {"objects": n, "bytes": total}, t0)

    # -- P2 / P5: warp put -------------------------------------------------------------

    def run_warp(self, srv: Server, bench: str, extra: list[str], benchdata: Path) -> str:
        args = [self.warp, bench, "--no-color", "--host", f"127.0.0.1:{srv.port}", "--access-key", ACCESS_KEY,
                "--secret-key", SECRET_KEY, "--tls=false", "--lookup", "path", "--region", REGION,
                "--bucket", WARP_BUCKET, "--noclear", "--benchdata", benchdata, *extra]
        cp = run(args, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(self.root)}, cwd=self.root)
        return cp.stdout

    def p2_put(self):
        key = "P2"
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        runs = {k: [] for k in self.kinds}
        idle = {k: [] for k in self.kinds}

        def one(kind: str, rep: int, srv: Server) -> dict:
            data = self.fresh(f"p2-{kind}-data")
            st = srv.start(data)
            s3load("mkbucket", "-endpoint", srv.endpoint, "-bucket", WARP_BUCKET)
            time.sleep(2)  # idle after start
            idle_rss = {**{f"idle_{k}": v for k, v in srv.rss().items()}, **st}
            bd = self.root / f"p2-{kind}-{rep}"
            self.run_warp(srv, "put", ["--obj.size", "16MiB", "--concurrent", "8",
                                       "--duration", f"{self.a.put_seconds}s"], bd)
            rss = srv.rss()
            agg = warp_json(bd.with_suffix(".json.zst"))
            bd.with_suffix(".json.zst").unlink(missing_ok=True)
            op = agg["by_op_type"]["PUT"]
            thr = op["throughput"]
            secs = thr["measure_duration_millis"] / 1000
            lat = op["requests_by_client"]
            segs = [s["single_sized_requests"] for c in lat.values() for s in c if "single_sized_requests" in s]
            r = {"mib_s": thr["bytes"] / secs / MIB, "obj_s": thr["objects"] / secs,
                 "errors": op.get("total_errors", 0),
                 "p50_ms": median([s["dur_median_millis"] for s in segs]),
                 "p99_ms": max([s["dur_99_millis"] for s in segs], default=None), **rss}
            idle[kind].append(idle_rss)
            log(f"P2 {kind} rep {rep}: {r['mib_s']:.1f} MiB/s, peak RSS {rss.get('VmHWM', 0):.0f} MiB")
            return r

        self.repeat(key, runs, one)
        self.record(key, runs, None, t0)
        self.record("P5idle", idle)

    # -- P3: warp mixed ----------------------------------------------------------------

    def p3_mixed(self, key: str = "P3", kinds: list[str] | None = None):
        if self.out_of_time(key):
            return
        t0 = time.monotonic()
        kinds = kinds or self.kinds
        runs = {k: [] for k in kinds}

        def one(kind: str, rep: int, srv: Server) -> dict:
            data = self.fresh(f"{key.lower()}-{kind}-data")
            self.start_server(kind, srv, data)
            s3load("mkbucket", "-endpoint", srv.endpoint, "-bucket", WARP_BUCKET)
            bd = self.root / f"{key.lower()}-{kind}-{rep}"
            text = self.run_warp(srv, "mixed", ["--obj.size", "4KiB", "--objects", str(self.a.mixed_objects),
                                                "--concurrent", "8", "--duration", f"{self.a.mixed_seconds}s",
                                                "--full"], bd)
            rss = srv.rss()
            r = mixed_stats(bd.with_suffix(".csv.zst"))
            bd.with_suffix(".csv.zst").unlink(missing_ok=True)
            m = re.search(r"Cluster Total: .*?([\d.]+) obj/s", text)
            r["warp_total_obj_s"] = float(m.group(1)) if m else None
            r.update(rss)
            log(f"{key} {kind} rep {rep}: {r['ops_s']:.0f} op/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
            r.update(self.repl_summary(kind, srv))
            return r

        self.repeat(key, runs, one, kinds)
        self.record(key, runs, None, t0)

    # -- P4 + P7: listing and restart --------------------------------------------------

    def p4_p7_list_restart(self):
        if self.out_of_time("P4"):
            return
        t0 = time.monotonic()
        n_cmp, n_big = self.a.list_keys, self.a.list_keys_walstore
        srv = {k: self.server(k, f"p4-{k}") for k in self.kinds}
        data = {k: self.fresh(f"p4-{k}-data") for k in self.kinds}
        seeding = {}
        for kind in self.kinds:
            srv[kind].start(data[kind])
            log(f"P4 seeding {n_cmp} empty objects into {kind} (HTTP PUT, 32 concurrent)")
            seeding[kind] = s3load("seed", "-endpoint", srv[kind].endpoint, "-bucket", BUCKET, "-prefix", "wal_005/",
                                   "-count", str(n_cmp), "-concurrency", "32", "-timeout", "15m", timeout=1000)
            log(f"  {seeding[kind]['per_sec']:.0f} PUT/s")
        runs = {k: [] for k in self.kinds}
        for rep in range(self.a.reps):
            for kind in self.order(rep):
                r = s3load("list", "-endpoint", srv[kind].endpoint, "-bucket", BUCKET, "-prefix", "wal_005/",
                           "-max-keys", "1000", "-timeout", "10m", timeout=700)
                if r["keys"] != n_cmp:
                    self.results["notes"].append(f"P4 {kind}: listed {r['keys']} keys, expected {n_cmp}")
                runs[kind].append({**r, **srv[kind].rss()})
                log(f"P4 {kind} rep {rep}: {r['keys']} keys in {r['seconds']:.2f}s = {r['keys_per_sec']:.0f} keys/s")
        for kind in self.kinds:
            srv[kind].stop()
        self.record("P4", runs, {"keys": n_cmp, "seeding": seeding}, t0)

        # walstore at the full count: the remaining keys through the Store API (server stopped).
        t1 = time.monotonic()
        big = {}
        if n_big > n_cmp:
            log(f"P4 seeding walstore up to {n_big} keys with walstore-bench-seed (server stopped)")
            cp = run([self.seed_exe, data["walstore"], BUCKET, "wal_005/", n_cmp, n_big - n_cmp, 64], timeout=1200)
            big["seeding"] = json.loads(cp.stdout.strip().splitlines()[-1])
            log(f"  {big['seeding']['per_sec']:.0f} objects/s")
        # P7: restart with everything stored; walstore at n_big, MinIO at n_cmp (reference).
        restarts = {k: [] for k in self.kinds}
        lists_big = []
        for rep in range(self.a.reps):
            for kind in self.order(rep):
                s = self.server(kind, f"p7-{kind}-{rep}")
                st = s.start(data[kind], restart=True)
                st.update(s.rss())
                restarts[kind].append(st)
                if kind == "walstore":
                    r = s3load("list", "-endpoint", s.endpoint, "-bucket", BUCKET, "-prefix", "wal_005/",
                               "-max-keys", "1000", "-timeout", "10m", timeout=700)
                    lists_big.append({**r, **s.rss()})
                    log(f"P7 walstore rep {rep}: ready {st['ready_s']*1000:.0f} ms, first ok {st['first_ok_s']*1000:.0f} ms;"
                        f" list {r['keys']} keys {r['keys_per_sec']:.0f} keys/s")
                else:
                    log(f"P7 minio rep {rep}: ready {st['ready_s']*1000:.0f} ms, first ok {st['first_ok_s']*1000:.0f} ms")
                s.stop()
        self.record("P4big", {"walstore": lists_big}, {"keys": n_big, **big}, t1)
        self.record("P7", restarts, {"keys": {"walstore": n_big, "minio": n_cmp}})
        for kind in self.kinds:
            self.trash(data[kind])

    # -- P12: delete latency through the guard while /metrics is scraped -----------------

    def p12_metrics_storm(self):
        """walstore alone (MinIO has no delete guard): DeleteObjects batches of released WAL
        through the delete guard, with /metrics scraped 50 times a second or not at all,
        alternating, each run in a fresh repository; p99 batch latency scraped / not."""
        if self.out_of_time("P12"):
            return
        t0 = time.monotonic()
        srv = self.server("walstore", "p12-walstore")
        srv.start(self.fresh("p12-walstore-data"))
        runs = {"quiet": [], "scraped": []}
        for rep in range(self.a.reps):
            for mode in (("quiet", "scraped") if rep % 2 == 0 else ("scraped", "quiet")):
                r = s3load("delstorm", "-endpoint", srv.endpoint, "-bucket", BUCKET, "-prefix", f"storm/{mode}{rep}/",
                           "-segments", str(self.a.storm_segments), "-batch", "500",
                           "-scrape-per-sec", "50" if mode == "scraped" else "0", "-timeout", "10m", timeout=700)
                runs[mode].append({**r, **srv.rss()})
                log(f"P12 {mode} rep {rep}: {r['batches']} batches, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"{r['scrapes']} scrapes")
        srv.stop()
        self.record("P12", runs, {"segments": self.a.storm_segments}, t0)

    # -- P6: backup-fetch + wal-fetch --------------------------------------------------

    def p6_restore(self, fx: dict):
        key = "P6"
        if self.out_of_time(key):
            return
        if not self.walg:
            return
        t0 = time.monotonic()
        segs = fx["segments"]
        srv = {k: self.server(k, f"p6-{k}") for k in self.kinds}
        data = {k: self.fresh(f"p6-{k}-data") for k in self.kinds}
        pgdata, sock = Path(fx["pgdata"]), fx["sock"]
        setup = {}
        # A pg_wal holding the segments with an empty archive_status, for the setup pushes.
        walsrc = self.fresh("p6-walsrc")
        (walsrc / "pg_wal" / "archive_status").mkdir(parents=True)
        for s in segs:
            os.link(Path(fx["wal_dir"]) / s, walsrc / "pg_wal" / s)
        pgenv = {"PATH": f"{self.pg_bin}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        run([self.pg_bin / "pg_ctl", "-D", pgdata, "-l", Path(fx["pgdata"]).parent / "pg.log", "-w", "-t", "120",
             "-o", "-c archive_command=/bin/true", "start"], timeout=180, user=PG_USER, env=pgenv, cwd="/tmp")
        try:
            warm(pgdata)
            warm(walsrc / "pg_wal")
            for kind in self.kinds:
                srv[kind].start(data[kind])
                env = self.walg_env(srv[kind], "p6", pgdata, self.root / "walg-home")
                env.update({"PGHOST": sock, "PGUSER": PG_USER, "PGPORT": "5432", "PGDATABASE": "postgres"})
                ts = time.monotonic()
                run([self.walg, "backup-push", pgdata], timeout=1200, env=env)
                tb = time.monotonic() - ts
                env = self.walg_env(srv[kind], "p6", walsrc, self.root / "walg-home")
                ts = time.monotonic()
                # Setup only: four wal-push processes at a time.
                procs: list[subprocess.Popen] = []
                for s in segs:
                    while len(procs) >= 4:
                        procs[0].wait(120)
                        if procs[0].returncode != 0:
                            raise RuntimeError(f"setup wal-push failed on {kind}")
                        procs.pop(0)
                    procs.append(subprocess.Popen([self.walg, "wal-push", str(walsrc / "pg_wal" / s)], env=env,
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
                for p in procs:
                    p.wait(120)
                setup[kind] = {"backup_push_s": tb, "wal_push_4_parallel_s": time.monotonic() - ts}
                log(f"P6 setup {kind}: backup-push {tb:.1f}s, {len(segs)} wal-push (4 parallel) "
                    f"{setup[kind]['wal_push_4_parallel_s']:.1f}s")
        finally:
            run([self.pg_bin / "pg_ctl", "-D", pgdata, "-w", "-t", "120", "-m", "fast", "stop"], timeout=180,
                user=PG_USER, env=pgenv, cwd="/tmp", check=False)
        shutil.rmtree(walsrc)
        runs = {k: [] for k in self.kinds}
        for rep in range(self.a.reps):
            for kind in self.order(rep):
                target = self.fresh(f"p6-restore-{kind}")
                env = self.walg_env(srv[kind], "p6", target, self.root / "walg-home")
                ts = time.monotonic()
                run([self.walg, "backup-fetch", target, "LATEST"], timeout=1200, env=env)
                tb = time.monotonic() - ts
                (target / "pg_wal").mkdir(exist_ok=True)
                tw0 = time.monotonic()
                for s in segs:  # as restore_command does: wal-g wal-fetch %f %p
                    run([self.walg, "wal-fetch", s, target / "pg_wal" / "RECOVERYXLOG"], timeout=120, env=env)
                tw = time.monotonic() - tw0
                wall = time.monotonic() - ts
                reap(str(target))
                r = {"wall_s": wall, "backup_fetch_s": tb, "wal_fetch_s": tw, **srv[kind].rss()}
                runs[kind].append(r)
                shutil.rmtree(target, ignore_errors=True)
                log(f"P6 {kind} rep {rep}: {wall:.1f}s (backup-fetch {tb:.1f}s, {len(segs)} wal-fetch {tw:.1f}s)")
        for kind in self.kinds:
            srv[kind].stop()
            shutil.rmtree(data[kind])
        self.record(key, runs, {"setup": setup, "backup_bytes": fx["pgdata_bytes"], "segments": len(segs)}, t0)

    # -- the whole run -----------------------------------------------------------------

    def main(self):
        if self.root.exists():  # leftovers of an interrupted run
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.mon.start()
        r = self.results
        r["started"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        r["uptime_before"] = run(["uptime"], timeout=10).stdout.strip()
        r["machine"] = machine_info(self.root)
        r["versions"] = versions(self)
        r["command"] = os.environ.get("BENCH_COMMAND", " ".join(sys.argv))
        r["params"] = vars(self.a)
        fx = None
        if self.walg:
            # Outside the timed comparison: built once and cached.
            fx = self.pg_fixture(self.a.pg_scale, self.a.segments)
        if self.a.fixture_only:
            return
        t_cmp = time.monotonic()
        self.deadline = t_cmp + self.a.max_minutes * 60
        r["limits"] = self.machine_limits()
        steps = list(self.a.only or WORKLOADS)
        rebuild = "R3" in steps
        if rebuild:  # R3 rebuilds from R1's copy: one R1 run, with the rebuild
            steps = [("R1" if st == "R3" else st) for st in steps if st != "R3" or "R1" not in steps]
        for step in steps:
            try:
                if step == "P1" and fx:
                    self.p1_wal_push(fx)
                elif step == "P2":
                    self.p2_put()
                elif step == "P3":
                    self.p3_mixed()
                elif step == "P4":
                    self.p4_p7_list_restart()
                elif step == "P6" and fx:
                    self.p6_restore(fx)
                elif step == "P12":
                    self.p12_metrics_storm()
                elif step == "R1":
                    self.r1_r3_replication(rebuild)
                elif step == "R2":
                    self.r2_replication_latency(fx)
                elif step == "I1":
                    self.i1_import()
                elif step == "T1":
                    self.t1_tiered_get()
                elif step == "T2":
                    self.t2_eviction()
                elif step == "X1":
                    self.x1_identity_cost(fx)
            except Exception as e:  # noqa: BLE001 - report and go on with the next workload
                log(f"{step} FAILED: {e}")
                r["notes"].append(f"{step} failed: {str(e)[:500]}")
        r["comparison_seconds"] = time.monotonic() - t_cmp
        if self.servers_alive():
            r["notes"].append("servers still running at the end were stopped: " + ", ".join(self.servers_alive()))
        shutil.rmtree(self.root / ".trash", ignore_errors=True)
        r["uptime_after"] = run(["uptime"], timeout=10).stdout.strip()
        self.mon.stop_ev.set()
        r["load"] = self.mon.window(t_cmp - T_START, time.monotonic() - T_START)
        r["non_loopback"] = []
        self.save()
        md = render(r)
        name = "quick.md" if self.a.quick else "latest.md"
        (HERE / "results" / name).write_text(md)
        if not self.a.quick and not self.a.no_readme and not self.a.only:
            update_readme(md)
        print(md)


def reap(marker: str, grace: float = 15.0):
    """Waits (bounded) for wal-g processes whose command line names `marker` (wal-fetch's
    detached prefetchers), then kills the rest by pid."""
    def pids():
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if marker in cmd and int(p) != os.getpid():
                    out.append(int(p))
        return out
    end = time.monotonic() + grace
    while time.monotonic() < end and pids():
        time.sleep(0.1)
    for p in pids():
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_import(report: dict, objects: int, total: int, copied: int, what: str) -> None:
    """Raises unless `walstore import`'s JSON report says: `copied` of the `objects` listed
    were copied (all their bytes when all), the rest unchanged, none failed, kept or left,
    and the verification of every prefix matched."""
    ver = report.get("verification") or {}
    problems = [f"{k} {report.get(k)!r}, expected {v!r}" for k, v in (
        ("listed", objects), ("copied", copied), ("unchanged", objects - copied), ("failed", []),
        ("kept_newer", []), ("interrupted", False)) if report.get(k) != v]
    if copied == objects and report.get("copied_bytes") != total:
        problems.append(f"copied_bytes {report.get('copied_bytes')}, expected {total}")
    if sum(c.get("source_objects", 0) for c in ver.values()) != objects or \
            any(c.get("matching") != c.get("source_objects") for c in ver.values()):
        problems.append(f"verification {ver}")
    if problems:
        raise RuntimeError(f"{what}: " + "; ".join(problems) + f" (report: {json.dumps(report)[:800]})")


def blob_bytes(data: Path) -> int:
    """Sum of the sizes of walstore's blob files under DATA/blobs (staging in blobs/tmp left
    out)."""
    total = 0
    blobs = data / "blobs"
    for dirpath, dirs, files in os.walk(blobs):
        if Path(dirpath) == blobs and "tmp" in dirs:
            dirs.remove("tmp")
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def wal_key(n: int) -> str:
    """The key `s3load seed` gives object n (after its prefix): a WAL segment's name."""
    return f"00000001{n // 256:08X}{n % 256:08X}.lz4"


def warp_json(path: Path) -> dict:
    cp = run(["zstd", "-dc", path], timeout=60)
    return json.loads(cp.stdout)


def warm(root: Path) -> int:
    """Reads every file under `root` once, so that whichever server goes first does not
    pay for the client's cold reads (walstore always goes first in repetition 0 and in
    the P6 setup). Returns the bytes read."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                with open(os.path.join(dirpath, f), "rb", buffering=0) as fh:
                    while chunk := fh.read(1 << 20):
                        total += len(chunk)
            except OSError:
                pass  # a file PostgreSQL removed meanwhile
    return total


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def parse_ts(s: str) -> float:
    # 2026-11-25T19:34:47.921982185Z -> seconds (sub-microsecond digits dropped)
    base, _, frac = s.rstrip("Z").partition(".")
    t = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


def mixed_stats(path: Path, only: str | None = None) -> dict:
    """Exact ops/s and latency percentiles from warp's --full per-request records (of the
    op type `only`, or all); `seconds` is last end − first start, `bytes` the bytes moved."""
    cp = run(["zstd", "-dc", path], timeout=60)
    lines = cp.stdout.splitlines()
    hdr = lines[0].split("\t")
    ix = {h: i for i, h in enumerate(hdr)}
    lat, by_op, errors, nbytes = [], {}, 0, 0
    t_first, t_last = None, None
    for ln in lines[1:]:
        c = ln.split("\t")
        if len(c) < len(hdr) or (only and c[ix["op"]] != only):
            continue
        if c[ix["error"]]:
            errors += 1
            continue
        nbytes += int(c[ix["bytes"]] or 0)
        ms = int(c[ix["duration_ns"]]) / 1e6
        lat.append(ms)
        by_op.setdefault(c[ix["op"]], []).append(ms)
        st, en = parse_ts(c[ix["start"]]), parse_ts(c[ix["end"]])
        t_first = st if t_first is None else min(t_first, st)
        t_last = en if t_last is None else max(t_last, en)
    span = (t_last - t_first) if lat else 1
    r = {"ops": len(lat), "errors": errors, "ops_s": len(lat) / span, "p50_ms": pct(lat, 0.5),
         "p99_ms": pct(lat, 0.99), "seconds": span, "bytes": nbytes}
    for op, xs in by_op.items():
        r[f"{op.lower()}_p50_ms"] = pct(xs, 0.5)
        r[f"{op.lower()}_p99_ms"] = pct(xs, 0.99)
    return r


def machine_info(root: Path) -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    fs = run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", root], timeout=10, check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem, 1), "fs": fs,
            "kernel": platform.release(), "data_root": str(root)}


def versions(b: Bench) -> dict:
    def first(args):
        try:
            cp = run(args, timeout=30, check=False)
            return (cp.stdout or cp.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    rev = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], timeout=10, check=False).stdout.strip()
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"], timeout=10,
                check=False).stdout.strip()
    return {
        "walstore": f"{rev}{' + uncommitted changes' if dirty else ''}",
        "walstore_binary": os.environ.get("WALSTORE_BUILD_NOTE", ""),
        "minio": os.environ.get("MINIO_VERSION", "?") + " (" + first([b.exe["minio"], "--version"]) + ")",
        "warp": os.environ.get("WARP_VERSION", "?"),
        "walg": first([b.walg, "--version"]) if b.walg else "not found",
        "postgres": first([b.pg_bin / "postgres", "--version"]),
        "openssl": first(["openssl", "version"]),
    }


# ------------------------------------------------------------------------ report

def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def render(r: dict) -> str:
    W = r["workloads"]
    lim = r.get("limits", {})

    def med(key, kind, m):
        return W.get(key, {}).get("median", {}).get(kind, {}).get(m)

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    def yes(cond):
        return "–" if cond is None else ("**yes**" if cond else "**no**")

    rows = []
    # P1
    w, m = med("P1", "walstore", "wall_s"), med("P1", "minio", "wall_s")
    rt = ratio(w, m)
    n = W.get("P1", {}).get("segments", "?")
    rows.append(("P1", f"WAL-G wal-push, {n} segments one after another (wall s)", fmt(w, 2), fmt(m, 2),
                 fmt(rt, 2), "≤ 0.6 × MinIO", yes(rt is not None and rt <= 0.6) if rt else "–"))
    # P2
    w, m = med("P2", "walstore", "mib_s"), med("P2", "minio", "mib_s")
    rt = ratio(w, m)
    limv = lim.get("limit_mib_s")
    frac = ratio(w, limv)
    met = None if rt is None else (rt >= 1.5 and frac is not None and frac >= 0.8)
    rows.append(("P2", "warp put 16 MiB, 8 concurrent (MiB/s)", fmt(w), fmt(m), fmt(rt, 2),
                 f"≥ 1.5 × MinIO and ≥ 0.8 × limit ({fmt(limv, 0)} MiB/s): {fmt(frac, 2)} × limit", yes(met)))
    # P3
    w, m = med("P3", "walstore", "ops_s"), med("P3", "minio", "ops_s")
    rt = ratio(w, m)
    wp99, mp50 = med("P3", "walstore", "p99_ms"), med("P3", "minio", "p50_ms")
    met = None if rt is None else (rt >= 2 and wp99 is not None and mp50 is not None and wp99 <= mp50)
    rows.append(("P3", "warp mixed 4 KiB, 8 concurrent (op/s; latency all ops)",
                 f"{fmt(w, 0)} op/s, p50 {fmt(med('P3', 'walstore', 'p50_ms'), 2)} ms, p99 {fmt(wp99, 2)} ms",
                 f"{fmt(m, 0)} op/s, p50 {fmt(mp50, 2)} ms, p99 {fmt(med('P3', 'minio', 'p99_ms'), 2)} ms",
                 fmt(rt, 2), "≥ 2 × MinIO op/s; walstore p99 ≤ MinIO p50", yes(met)))
    # P4
    keys = W.get("P4", {}).get("keys")
    w, m = med("P4", "walstore", "keys_per_sec"), med("P4", "minio", "keys_per_sec")
    rt = ratio(w, m)
    met = None if rt is None else (w >= 50000 and rt >= 20)
    rows.append(("P4", f"ListObjectsV2 full scan, {fmt(keys)} keys in wal_005/, 1000/page (keys/s)", fmt(w, 0),
                 fmt(m, 0), fmt(rt, 1), "≥ 50,000 keys/s and ≥ 20 × MinIO", yes(met)))
    wb = med("P4big", "walstore", "keys_per_sec")
    kb = W.get("P4big", {}).get("keys")
    if wb is not None:
        rows.append(("P4", f"… walstore alone at {fmt(kb)} keys (keys/s)", fmt(wb, 0), "–", "–",
                     "≥ 50,000 keys/s", yes(wb >= 50000)))
    # P5
    wi, mi = med("P5idle", "walstore", "idle_VmHWM"), med("P5idle", "minio", "idle_VmHWM")
    wp, mp = med("P2", "walstore", "VmHWM"), med("P2", "minio", "VmHWM")
    met = None if wi is None else (wi <= 64 and (wp or 1e9) <= 256 and mi and wi <= mi / 4 and mp and wp <= mp / 4)
    rows.append(("P5", "peak RSS idle after start / during P2 (MiB)", f"{fmt(wi, 0)} / {fmt(wp, 0)}",
                 f"{fmt(mi, 0)} / {fmt(mp, 0)}", f"{fmt(ratio(wi, mi), 2)} / {fmt(ratio(wp, mp), 2)}",
                 "≤ 64 idle, ≤ 256 under P2, ≤ ¼ of MinIO's", yes(met)))
    # P6
    w, m = med("P6", "walstore", "wall_s"), med("P6", "minio", "wall_s")
    rt = ratio(w, m)
    bb = W.get("P6", {}).get("backup_bytes")
    nseg = W.get("P6", {}).get("segments", "?")
    rows.append(("P6", f"WAL-G backup-fetch ({fmt((bb or 0) / 2**30, 2)} GiB cluster) + {nseg} wal-fetch (wall s)",
                 f"{fmt(w, 1)} ({fmt(med('P6', 'walstore', 'backup_fetch_s'), 1)} + {fmt(med('P6', 'walstore', 'wal_fetch_s'), 1)})",
                 f"{fmt(m, 1)} ({fmt(med('P6', 'minio', 'backup_fetch_s'), 1)} + {fmt(med('P6', 'minio', 'wal_fetch_s'), 1)})",
                 fmt(rt, 2), "≤ 0.8 × MinIO", yes(rt <= 0.8) if rt else "–"))
    # P7
    w, m = med("P7", "walstore", "ready_s"), med("P7", "minio", "ready_s")
    wf, mf = med("P7", "walstore", "first_ok_s"), med("P7", "minio", "first_ok_s")
    k7 = W.get("P7", {}).get("keys", {})
    rows.append(("P7", f"restart → /health/ready 200 / first signed request OK (ms); walstore {fmt(k7.get('walstore'))} objects, MinIO {fmt(k7.get('minio'))}",
                 f"{fmt(w and w * 1000, 0)} / {fmt(wf and wf * 1000, 0)}", f"{fmt(m and m * 1000, 0)} / {fmt(mf and mf * 1000, 0)}",
                 fmt(ratio(wf, mf), 2), "≤ 1 s", yes(wf <= 1.0) if wf is not None else "–"))
    # P12
    q, sc = med("P12", "quiet", "p99_ms"), med("P12", "scraped", "p99_ms")
    rt = ratio(sc, q)
    nseg = W.get("P12", {}).get("segments", "?")
    rows.append(("P12", f"DeleteObjects of released WAL through the delete guard ({fmt(nseg)} segments, 500 keys per "
                 "batch): p50 / p99 batch latency with /metrics scraped 50×/s (ms)",
                 f"{fmt(med('P12', 'scraped', 'p50_ms'), 1)} / {fmt(sc, 1)} (quiet: "
                 f"{fmt(med('P12', 'quiet', 'p50_ms'), 1)} / {fmt(q, 1)})", "–", f"{fmt(rt, 2)} (scraped/quiet p99)",
                 "scraped p99 ≤ 1.2 × quiet p99", yes(rt <= 1.2) if rt else "–"))

    # Only the workloads that ran (a partial run, --only).
    rows = [row for row in rows if {"P5": "P5idle"}.get(row[0], row[0]) in W or (row[0] == "P4" and "P4big" in W)]
    repl_rows = render_replication(W)
    import_rows = render_import(W)
    tier_rows = render_tiering(W)

    mach = r["machine"]
    v = r["versions"]
    load = r.get("load") or {}
    out = []
    out.append(f"Run of {r['started']}: {fmt(r.get('comparison_seconds', 0) / 60, 1)} min for the comparison "
               f"({r['params']['reps']} repetitions, alternating; medians shown).\n")
    out.append(f"- Machine: {mach['nproc']} cores, {mach['cpu']}, {mach['ram_gib']} GiB RAM, kernel {mach['kernel']}; "
               f"data dir `{mach['data_root']}` on `{mach['fs']}`")
    out.append(f"- Versions: walstore `{v['walstore']}`{(' (' + v['walstore_binary'] + ')') if v.get('walstore_binary') else ''}; "
               f"MinIO {v['minio']}; warp {v['warp']}; WAL-G `{v['walg']}`; {v['postgres']}; {v['openssl']}")
    out.append(f"- Command: `{r['command']}`")
    out.append(f"- Load: `{r['uptime_before']}` before, `{r['uptime_after']}` after; during the comparison the "
               f"1-min load average peaked at {fmt(load.get('load1_max'), 2)} (mean {fmt(load.get('load1_mean'), 2)}); "
               f"processes outside this run used {fmt(load.get('other_cores_mean'), 2)} cores on average "
               f"(max {fmt(load.get('other_cores_max'), 2)}) of {mach['nproc']}.")
    out.append(f"- Machine limits (same run): single-core MD5 {fmt(lim.get('md5_mib_s'), 0)} MiB/s, SHA-256 "
               f"{fmt(lim.get('sha256_mib_s'), 0)} MiB/s (`openssl speed`, 1 MiB blocks); sequential write with "
               f"fdatasync every 16 MiB {fmt(lim.get('disk_write_fdatasync_mib_s'), 0)} MiB/s "
               f"(runs: {', '.join(fmt(x, 0) for x in lim.get('disk_runs', []))}); limit = lower = {fmt(lim.get('limit_mib_s'), 0)} MiB/s.\n")
    for head, table in (("| # | workload | walstore | MinIO | walstore/MinIO | target | met |", rows),
                        ("| # | workload | walstore with replication | reference | ratio | target | met |", repl_rows),
                        ("| # | workload | walstore import | reference | ratio | target | met |", import_rows),
                        ("| # | workload | walstore, tiered | reference | ratio | target | met |", tier_rows)):
        if table:
            out.append(head)
            out.append("|---|---|---|---|---|---|---|")
            out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in table)
            out.append("")
    # Per-workload detail: peak RSS, time, load.
    out.append("| workload | walstore peak RSS (MiB) | MinIO peak RSS (MiB) | wall time of workload (s) | other processes' CPU (cores, mean / max) |")
    out.append("|---|---|---|---|---|")
    for key in ("P1", "P2", "P3", "P4", "P4big", "P6", "P12", "R1", "R2-P1", "R2-P3", "I1", "T1", "T2"):
        if key not in W:
            continue
        ld = W[key].get("load") or {}
        ws = fmt(med(key, "walstore", "VmHWM"), 0)
        if key == "R1":  # the front, seeded then replicating
            ws = fmt(med(key, REPL, "VmHWM"), 0)
        elif key.startswith("R2"):
            ws = f"{ws} without / {fmt(med(key, REPL, 'VmHWM'), 0)} with replication"
        elif key == "P12":
            ws = fmt(med(key, "scraped", "VmHWM"), 0)
        elif key == "T1":  # reset before the tiered GETs: their peak
            ws = f"{fmt(med(key, 'tiered', 'VmHWM'), 0)} during the tiered GETs"
        elif key == "T2":  # reset before `tier set`: the peak while evicting
            ws = f"{fmt(med(key, 'walstore', 'evict_VmHWM'), 0)} while evicting"
        out.append(f"| {key} | {ws} | {fmt(med(key, 'minio', 'VmHWM'), 0)} | "
                   f"{fmt(W[key].get('seconds'), 0)} | {fmt(ld.get('other_cores_mean'), 2)} / {fmt(ld.get('other_cores_max'), 2)} |")
    out.append("")
    extra = []
    if "P4" in W:
        sd = W["P4"].get("seeding", {})
        extra.append("P4 seeding over HTTP (32 concurrent PUTs of empty objects): " + ", ".join(
            f"{k} {fmt(v.get('per_sec'), 0)} PUT/s" for k, v in sd.items()))
    if "P4big" in W and W["P4big"].get("seeding"):
        extra.append(f"P4 walstore 1M: remaining keys seeded with walstore-bench-seed at "
                     f"{fmt(W['P4big']['seeding'].get('per_sec'), 0)} objects/s")
    if "P3" in W:
        for kind in ("walstore", "minio"):
            mm = W["P3"]["median"].get(kind, {})
            extra.append(f"P3 {kind} per op p50/p99 ms: " + ", ".join(
                f"{op} {fmt(mm.get(op + '_p50_ms'), 2)}/{fmt(mm.get(op + '_p99_ms'), 2)}"
                for op in ("get", "stat", "put", "delete")))
    if "P2" in W:
        for kind in ("walstore", "minio"):
            mm = W["P2"]["median"].get(kind, {})
            extra.append(f"P2 {kind}: {fmt(mm.get('obj_s'), 1)} obj/s, request p50 {fmt(mm.get('p50_ms'), 0)} ms, "
                         f"p99 {fmt(mm.get('p99_ms'), 0)} ms")
    if "P6" in W:
        for kind, s in W["P6"].get("setup", {}).items():
            extra.append(f"P6 setup {kind} (not timed in the row): backup-push {fmt(s['backup_push_s'], 1)} s")
    if "R1" in W:
        mm = W["R1"]["median"].get(REPL, {})
        extra.append(f"R1 walstore: seeded by warp at {fmt(mm.get('seed_mib_s'), 1)} MiB/s (4 concurrent), peak RSS "
                     f"{fmt(mm.get('seed_VmHWM'), 0)} MiB after seeding, {fmt(mm.get('VmHWM'), 0)} MiB after the copy "
                     f"(RSS during the copy at most {fmt(mm.get('rss_during_copy_max'), 0)} MiB); first object on the "
                     f"target {fmt(mm.get('first_copy_s'), 2)} s after `replication add`, "
                     f"{fmt(mm.get('mib_s_from_first_copy'), 1)} MiB/s counted from then; per rep (replication / warp "
                     "MiB/s): " + ", ".join(f"{fmt(a.get('mib_s'), 1)} / {fmt(b.get('mib_s'), 1)}" for a, b in
                                           zip(W["R1"]["runs"].get(REPL, []), W["R1"]["runs"].get("minio", []))))
    for key in ("R2-P1", "R2-P3"):
        if key in W:
            mm = W[key]["median"].get(REPL, {})
            extra.append(f"{key} with replication, when the load stopped: backlog {fmt(mm.get('repl_backlog_objects_end'), 0)} "
                         f"objects ({fmt(mm.get('repl_backlog_mib_end'), 1)} MiB), lag {fmt(mm.get('repl_lag_s_end'), 1)} s; "
                         f"caught up {fmt(mm.get('repl_drain_s'), 2)} s later; {fmt(mm.get('repl_objects'), 0)} objects and "
                         f"{fmt(mm.get('repl_deletes'), 0)} deletes replicated, {fmt(mm.get('repl_errors'), 0)} errors")
    if "I1" in W:
        mm, gm = W["I1"]["median"].get("walstore", {}), W["I1"]["median"].get("minio", {})
        extra.append(f"I1 walstore import: its own `seconds` {fmt(mm.get('own_s'), 2)} s (the CLI polls the server "
                     f"every 0.5 s); re-run {fmt(mm.get('rerun_s'), 2)} s (its own {fmt(mm.get('rerun_own_s'), 2)} s); "
                     f"peak RSS {fmt(mm.get('start_VmHWM'), 0)} MiB after start, {fmt(mm.get('VmHWM'), 0)} MiB after "
                     f"the import, {fmt(mm.get('rerun_VmHWM'), 0)} MiB after the re-run; source seeded by warp at "
                     f"{fmt(gm.get('seed_mib_s'), 1)} MiB/s; warp get per size ({W['I1'].get('get_seconds')} s each): "
                     + ", ".join(f"{size} {fmt(gm.get('gets_' + size), 0)} GETs at "
                                 f"{fmt(gm.get('mib_s_' + size), 1)} MiB/s" for n, size in W["I1"].get("sets", []) if n)
                     + "; per rep (import / warp get MiB/s): " + ", ".join(
                         f"{fmt(a.get('mib_s'), 1)} / {fmt(b.get('mib_s'), 1)}"
                         for a, b in zip(W["I1"]["runs"].get("walstore", []), W["I1"]["runs"].get("minio", []))))
    if "T1" in W:
        su, sm = W["T1"].get("setup", {}), W["T1"].get("streams")
        runs_w, runs_m = W["T1"]["runs"].get("tiered", []), W["T1"]["runs"].get("minio", [])
        extra.append(f"T1 setup: multipart PUT of {su.get('parts')} × {W['T1'].get('part')} parts at "
                     f"{fmt(su.get('put_mib_s'), 0)} MiB/s; replicated {fmt(su.get('replication_s'), 2)} s after "
                     f"`replication add`; evicted {fmt(su.get('evict_s'), 2)} s after `tier set` (the worker runs every "
                     f"1 s); blob files {fmt(su.get('blobs_before', 0) / MIB, 1)} → {fmt(su.get('blobs_after', 0) / MIB, 1)} MiB; "
                     f"SHA-256 equal on the local, tiered and direct paths; {fmt(su.get('remote_reads'))} remote reads "
                     f"(blob streams opened), {fmt(su.get('remote_read_failures'))} failures; time to first byte, one "
                     f"stream, tiered / direct / local: {fmt(med('T1', 'tiered', 'ttfb_ms_1'), 1)} / "
                     f"{fmt(med('T1', 'minio', 'ttfb_ms_1'), 1)} / {fmt(med('T1', 'local', 'ttfb_ms_1'), 1)} ms; "
                     "CPU seconds per GiB read (walstore + MinIO + client), one stream / " + f"{sm} streams: " + "; ".join(
                         f"{what} " + " / ".join(
                             f"{fmt(med('T1', kind, f'cpu_walstore_{n}'), 2)} + {fmt(med('T1', kind, f'cpu_minio_{n}'), 2)}"
                             f" + {fmt(med('T1', kind, f'cpu_client_{n}'), 2)}" for n in (1, sm))
                         for what, kind in (("tiered", "tiered"), ("direct", "minio"), ("local", "local"))) + "; "
                     "per rep (tiered / direct MiB/s, one stream; " + f"{sm} streams): " + ", ".join(
                         f"{fmt(a.get('mib_s_1'), 0)} / {fmt(b.get('mib_s_1'), 0)}; {fmt(a.get(f'mib_s_{sm}'), 0)} / "
                         f"{fmt(b.get(f'mib_s_{sm}'), 0)}" for a, b in zip(runs_w, runs_m)))
    if "T2" in W:
        mm = W["T2"]["median"].get("walstore", {})
        extra.append(f"T2: seeded at {fmt(mm.get('seed_mib_s'), 1)} MiB/s (4 concurrent PUTs), replicated in "
                     f"{fmt(mm.get('replication_s'), 2)} s ({fmt(mm.get('repl_mib_s'), 1)} MiB/s); first eviction "
                     f"{fmt(mm.get('first_evict_s'), 2)} s after `tier set`, {fmt(mm.get('obj_s_from_first'), 0)} obj/s "
                     f"counted from then; peak RSS {fmt(mm.get('setup_VmHWM'), 0)} MiB before `tier set` (seeding, "
                     f"replication), {fmt(mm.get('evict_VmHWM'), 0)} MiB while evicting; per rep (s): " + ", ".join(
                         fmt(x.get("evict_s"), 2) for x in W["T2"]["runs"].get("walstore", [])))
    for n in r.get("notes", []):
        extra.append("NOTE: " + n)
    out.extend(f"- {e}" for e in extra)
    return "\n".join(out) + "\n"


def render_replication(W: dict) -> list[tuple]:
    """Rows of the replication table (R1, R2, R3), for the workloads that ran."""
    def med(key, kind, m):
        return W.get(key, {}).get("median", {}).get(kind, {}).get(m)

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    rows = []
    if "R1" in W:
        sets = " + ".join(f"{n} × {size.replace('MiB', ' MiB')}" for n, size in W["R1"].get("sets", []) if n)
        a, b = med("R1", REPL, "mib_s"), med("R1", "minio", "mib_s")
        rt = ratio(a, b)
        rows.append(("R1", f"replication backfill of {sets} ({fmt(W['R1'].get('bytes', 0) / MIB, 0)} MiB) into MinIO: "
                     "`replication add` → backlog 0, vs warp PUT of the same objects into MinIO, 4 at a time",
                     f"{fmt(a, 1)} MiB/s, {fmt(med('R1', REPL, 'obj_s'), 1)} obj/s ({fmt(med('R1', REPL, 'seconds'), 2)} s)",
                     f"warp → MinIO {fmt(b, 1)} MiB/s, {fmt(med('R1', 'minio', 'obj_s'), 1)} obj/s "
                     f"({fmt(med('R1', 'minio', 'seconds'), 2)} s)",
                     fmt(rt, 2), "≥ 0.8 × warp", "–" if rt is None else ("**yes**" if rt >= 0.8 else "**no**")))
    for key, what, thr in (("R2-P1", "P1 (WAL-G wal-push, one after another): wall s; per push p50 / p99 ms", "wall_s"),
                           ("R2-P3", "P3 (warp mixed 4 KiB): op/s; p50 / p99 ms", "ops_s")):
        if key not in W:
            continue
        cells = []
        for kind in (REPL, "walstore"):
            t = med(key, kind, thr)
            cells.append(f"{fmt(t, 2 if thr == 'wall_s' else 0)}{' s' if thr == 'wall_s' else ' op/s'}, p50 "
                         f"{fmt(med(key, kind, 'p50_ms'), 2)} ms, p99 {fmt(med(key, kind, 'p99_ms'), 2)} ms")
        r50 = ratio(med(key, REPL, "p50_ms"), med(key, "walstore", "p50_ms"))
        r99 = ratio(med(key, REPL, "p99_ms"), med(key, "walstore", "p99_ms"))
        rt = ratio(med(key, REPL, thr), med(key, "walstore", thr))
        rows.append((key, f"{what}; with a MinIO replication target (mirror) vs without", cells[0],
                     "without: " + cells[1], f"p50 {fmt(r50, 2)}, p99 {fmt(r99, 2)}, {thr.split('_')[0]} {fmt(rt, 2)}",
                     "p50 ≤ 1.05 × without", "–" if r50 is None else ("**yes**" if r50 <= 1.05 else "**no**")))
    if "R3" in W:
        rows.append(("R3", f"`walstore rebuild` of R1's copy ({fmt(W['R3'].get('objects'), 0)} objects, "
                     f"{fmt(W['R3'].get('bytes', 0) / MIB, 0)} MiB) into an empty data dir, wall time incl. its check",
                     f"{fmt(med('R3', 'walstore', 'mib_s'), 1)} MiB/s, {fmt(med('R3', 'walstore', 'obj_s'), 1)} obj/s "
                     f"({fmt(med('R3', 'walstore', 'wall_s'), 2)} s)",
                     f"its own summary: {fmt(med('R3', 'walstore', 'own_mib_s'), 1)} MiB/s in "
                     f"{fmt(med('R3', 'walstore', 'own_s'), 1)} s", "–", "–", "–"))
    return rows


def render_import(W: dict) -> list[tuple]:
    """The I1 row, when it ran."""
    if "I1" not in W:
        return []
    w, g = W["I1"]["median"].get("walstore", {}), W["I1"]["median"].get("minio", {})
    a, b = w.get("mib_s"), g.get("mib_s")
    sets = " + ".join(f"{n} × {size.replace('MiB', ' MiB')}" for n, size in W["I1"].get("sets", []) if n)
    return [("I1", f"`walstore import` of {sets} ({fmt(W['I1'].get('bytes', 0) / MIB, 0)} MiB) from MinIO into a "
             "fresh walstore, wall time of the CLI; idempotent re-run (0 copied); vs warp get of the same objects "
             "from that MinIO, 4 at a time",
             f"{fmt(a, 1)} MiB/s, {fmt(w.get('obj_s'), 1)} obj/s ({fmt(w.get('wall_s'), 2)} s); re-run "
             f"{fmt(w.get('rerun_s'), 2)} s; peak RSS {fmt(w.get('VmHWM'), 0)} MiB",
             f"warp get ← MinIO {fmt(b, 1)} MiB/s, {fmt(g.get('obj_s'), 1)} obj/s ({fmt(g.get('seconds'), 2)} s for "
             "the set at warp's per-size rates)",
             fmt(a / b if a is not None and b else None, 2), "–", "–")]


def render_tiering(W: dict) -> list[tuple]:
    """The T1 and T2 rows, for those that ran."""
    def med(key, kind, m):
        return W.get(key, {}).get("median", {}).get(kind, {}).get(m)

    rows = []
    if "T1" in W:
        sm, rg = W["T1"].get("streams"), W["T1"].get("range")
        r1, rn = med("T1", "tiered", "ratio_1"), med("T1", "tiered", f"ratio_{sm}")
        met = "–" if r1 is None else "; ".join(f"{what}: {'**yes**' if x >= 0.8 else '**no**'}"
                                                for what, x in (("1 stream", r1), (f"{sm} streams", rn)) if x is not None)
        rows.append(("T1", f"GET of a tiered {fmt(W['T1'].get('bytes', 0) / MIB, 0)} MiB object (multipart, "
                     f"{W['T1'].get('part', '').replace('MiB', ' MiB')} parts) through walstore, its bytes streamed from "
                     "its MinIO target, vs GET of the copy straight from that MinIO, same client: one GET / "
                     f"{sm} ranged GETs of {rg.replace('MiB', ' MiB')} at a time",
                     f"{fmt(med('T1', 'tiered', 'mib_s_1'), 0)} / {fmt(med('T1', 'tiered', f'mib_s_{sm}'), 0)} MiB/s; "
                     f"peak RSS {fmt(med('T1', 'tiered', 'VmHWM'), 0)} MiB",
                     f"MinIO direct {fmt(med('T1', 'minio', 'mib_s_1'), 0)} / "
                     f"{fmt(med('T1', 'minio', f'mib_s_{sm}'), 0)} MiB/s; walstore local (before eviction) "
                     f"{fmt(med('T1', 'local', 'mib_s_1'), 0)} / {fmt(med('T1', 'local', f'mib_s_{sm}'), 0)} MiB/s",
                     f"{fmt(r1, 2)} / {fmt(rn, 2)} (median of per-rep ratios)", "≥ 0.8 × direct", met))
    if "T2" in W:
        rows.append(("T2", f"eviction of {fmt(W['T2'].get('objects'))} replicated 1 MiB objects "
                     f"({fmt(W['T2'].get('bytes', 0) / MIB, 0)} MiB): `tier set --after 0s` → all evicted "
                     "(`tier status`; worker every 1 s)",
                     f"{fmt(med('T2', 'walstore', 'obj_s'), 0)} obj/s, {fmt(med('T2', 'walstore', 'mib_s'), 0)} MiB/s "
                     f"({fmt(med('T2', 'walstore', 'evict_s'), 2)} s); peak RSS while evicting "
                     f"{fmt(med('T2', 'walstore', 'evict_VmHWM'), 0)} MiB", "–", "–", "none set", "–"))
    return rows


def update_readme(md: str):
    p = HERE / "README.md"
    text = p.read_text() if p.exists() else ""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    block = f"{begin}\n{md}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    p.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions per workload (default 5)")
    ap.add_argument("--quick", action="store_true", help="short smoke run: 1 rep, small sizes, README untouched")
    ap.add_argument("--data-root", default="/var/tmp/walstore-bench", help="data dirs of both servers")
    ap.add_argument("--pg-cache", default="/var/tmp/walstore-bench-cache",
                    help="cached PostgreSQL fixture (must be reachable by the postgres user)")
    ap.add_argument("--max-minutes", type=float, default=35, help="start no workload after this (default 35)")
    ap.add_argument("--only", nargs="*", choices=WORKLOADS, metavar="W",
                    help="run only these workloads: " + ", ".join(WORKLOADS) + " (P5 comes with P2, P7 with P4; "
                    "R3 rebuilds from R1's copy, so it runs R1 too)")
    ap.add_argument("--fixture-only", action="store_true", help="only build the cached PostgreSQL fixture")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benches/README.md")
    a = ap.parse_args()
    a.segments, a.pg_scale = 200, 70
    a.put_seconds, a.mixed_seconds, a.mixed_objects = 8, 8, 1000
    a.list_keys, a.list_keys_walstore = 100_000, 1_000_000
    a.disk_size = "1GiB"
    a.storm_segments = 20_000
    a.repl_small, a.repl_large = 400, 8  # R1 and I1: 1 MiB and 64 MiB objects
    a.import_get_seconds = 3  # I1's reference: warp get of each size for this long
    a.tier_object_mib, a.tier_objects = 1024, 2000  # T1: one 1 GiB object; T2: 2000 × 1 MiB
    if a.quick:
        a.reps = min(a.reps, 1) if "--reps" not in sys.argv else a.reps
        a.segments, a.pg_scale = 20, 10
        a.put_seconds, a.mixed_seconds, a.mixed_objects = 4, 4, 500
        a.list_keys, a.list_keys_walstore = 5_000, 20_000
        a.disk_size = "256MiB"
        a.storm_segments = 3_000
        a.repl_small, a.repl_large = 40, 2
        a.import_get_seconds = 2
        a.tier_object_mib, a.tier_objects = 128, 200
    if os.geteuid() != 0:
        sys.exit("compare.py runs PostgreSQL as the postgres user and must start as root")
    global S3LOAD
    S3LOAD = env_path("S3LOAD_EXE")
    Bench(a).main()


if __name__ == "__main__":
    main()
