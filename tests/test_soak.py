"""Soak: mixed load for a fixed time; no errors, memory and file descriptors flat.

`s3load soak` (benches/s3load, standard library Go) runs 8 small-object workers
(4 KiB PUT/GET/LIST/DELETE over 2,000 keys) and one pusher of 16 MiB segments
(one a second, the older ones deleted) against a walstore on 127.0.0.1. This
test samples the server's RSS and open file descriptors from /proc every few
seconds and checks, after a warm-up (half of a short run, 5 minutes of a long
one: RocksDB's memtables and block cache fill first), that neither grows: RSS
ends within 25 % + 32 MiB of its warm value, file descriptors within 16.

CI runs 60 s. The long run (30 minutes) is one command:

    SOAK_SECONDS=1800 pytest tests/test_soak.py -s

It prints a table (per operation: count, errors, p50/p99/max latency; RSS and
file descriptors at start, warm, peak and end) to paste into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest

from harness import Walstore, missing_dependency

REPO = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("SOAK_SECONDS", "60"))
# s3load soak's defaults: 2,000 small keys and 8 kept segments.
LIVE_KEYS = 2000 + 8
# Unreferenced blobs GC may trail by: the churn of a few GC ticks (5 s here).
MAX_GC_LAG_BLOBS = 50_000


@pytest.fixture(scope="module")
def s3load(tmp_path_factory) -> Path:
    if shutil.which("go") is None:
        pytest.skip(missing_dependency("Go is needed to build benches/s3load"))
    exe = tmp_path_factory.mktemp("s3load") / "s3load"
    subprocess.run(["go", "build", "-trimpath", "-o", str(exe), "."], cwd=REPO / "benches" / "s3load",
                   check=True, timeout=300, env=dict(os.environ, CGO_ENABLED="0"))
    return exe


def blob_usage(data: Path) -> tuple[int, int]:
    """(blob files, their bytes) under the data directory."""
    files = size = 0
    for root, _, names in os.walk(data / "blobs"):
        for n in names:
            try:
                size += os.stat(os.path.join(root, n)).st_size
                files += 1
            except FileNotFoundError:  # collected while we walked
                pass
    return files, size


def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS bytes, open file descriptors) of `pid`."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def test_soak(tmp_path: Path, s3load: Path):
    assert 10 <= SECONDS <= 4 * 3600, "SOAK_SECONDS must be between 10 and 14400"
    s = Walstore(data_dir=tmp_path / "data", buckets=["soak"],
                 extra_args=["--gc-grace", "0s", "--gc-interval", "5s"]).start()
    samples: list[tuple[float, int, int]] = []
    blobs: list[tuple[float, int, int]] = []
    stop = threading.Event()
    try:
        pid = s.proc.pid
        samples.append((0.0, *proc_sample(pid)))
        t0 = time.monotonic()

        def sampler():
            while not stop.wait(max(1.0, SECONDS / 120)):
                samples.append((time.monotonic() - t0, *proc_sample(pid)))
                blobs.append((time.monotonic() - t0, *blob_usage(tmp_path / "data")))

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        env = dict(os.environ, S3LOAD_ACCESS_KEY=s.access_key, S3LOAD_SECRET_KEY=s.secret_key)
        cp = subprocess.run([str(s3load), "soak", "-endpoint", s.endpoint, "-bucket", "soak", "-region", s.region,
                             "-duration", f"{SECONDS}s"], env=env, capture_output=True, text=True,
                            timeout=SECONDS + 120)
        stop.set()
        th.join()
        samples.append((time.monotonic() - t0, *proc_sample(pid)))
        assert cp.stdout.strip(), f"s3load printed nothing: {cp.stderr[-2000:]}"
        res = json.loads(cp.stdout)
        # Load has stopped: within a few GC ticks only the live objects' blobs
        # remain (one blob per non-empty object at most: identical bodies share).
        s3 = boto3.client("s3", **s.boto3_kwargs())
        live = sum(len(pg.get("Contents", [])) for pg in s3.get_paginator("list_objects_v2").paginate(Bucket="soak"))
        deadline = time.monotonic() + 60
        while True:
            settled = blob_usage(tmp_path / "data")
            if settled[0] <= live or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        stop.set()
        code = s.stop()
        # Blobs deleted under churn wait for GC; do not leave gigabytes in pytest's kept temp dirs.
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
    assert code == 0, f"walstore exited with {code}"

    # Warm: caches and memtables have filled (half of a short run, 5 minutes of a long one).
    warm = next(x for x in samples if x[0] >= min(SECONDS / 2, 300))
    start, end = samples[0], samples[-1]
    peak_rss = max(x[1] for x in samples)
    peak_fds = max(x[2] for x in samples)
    mib = 1 << 20
    ops = ["put_small", "get_small", "list", "delete_small", "put_segment", "delete_segment"]
    lines = [f"soak {res['seconds']:.0f} s, {res['requests']} requests, {res['errors']} errors (seed {res['seed']})",
             "| operation | count | errors | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for op in ops:
        o = res[op]
        lines.append(f"| {op} | {o['count']} | {o['errors']} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {o['max_ms']:.1f} |")
    peak_blobs = max(blobs, key=lambda x: x[1]) if blobs else (0.0, 0, 0)
    lines.append(f"blob files: peak {peak_blobs[1]} ({peak_blobs[2] / mib:.0f} MiB) at {peak_blobs[0]:.0f} s; "
                 f"after the load {settled[0]} ({settled[1] / mib:.0f} MiB); live objects {live}")
    lines.append(f"RSS MiB: start {start[1] / mib:.0f}, warm {warm[1] / mib:.0f}, peak {peak_rss / mib:.0f}, "
                 f"end {end[1] / mib:.0f}; open fds: start {start[2]}, warm {warm[2]}, peak {peak_fds}, end {end[2]}")
    print("\n" + "\n".join(lines))

    assert res["errors"] == 0 and cp.returncode == 0, f"errors under load: {res['first_errors']}"
    for op in ops:
        assert res[op]["count"] > 0, f"no {op} ran: {res}"
    assert end[1] <= warm[1] * 1.25 + 32 * mib, f"RSS grew from {warm[1] / mib:.0f} to {end[1] / mib:.0f} MiB"
    assert end[2] <= warm[2] + 16, f"open file descriptors grew from {warm[2]} to {end[2]}"
    # GC keeps up: deleted and overwritten bodies do not pile up on disk.
    assert peak_blobs[1] <= LIVE_KEYS + MAX_GC_LAG_BLOBS, f"blob files peaked at {peak_blobs[1]}"
    assert settled[0] <= live, f"{settled[0]} blob files left 60 s after the load for {live} objects"
