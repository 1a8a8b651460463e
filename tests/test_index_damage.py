"""A damaged index (RocksDB) at start: a clear one-line refusal, never a panic, never data loss.

Structural damage (CURRENT, MANIFEST, a missing or truncated table file) stops
the start with a message that says what is damaged and what to do. A missing
index next to existing blobs is refused too: starting would create an empty
index and the orphan sweep would delete every blob. So is a MANIFEST cut at a
record boundary, which RocksDB silently reads as an older, empty state. A flipped byte inside a
data block is found by the `index-verify` job right after start (logged, and
counted in walstore_maintenance_errors_total); reads that need the block fail
(500) instead of returning wrong data, and the offline `walstore check` fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import Walstore, wait_for, walstore_exe

BUCKET = "backups"
N_OBJECTS = 1500


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A data directory with objects, its index flushed to table files."""
    d = tmp_path_factory.mktemp("index-damage") / "data"
    s = Walstore(data_dir=d, buckets=[BUCKET]).start()
    try:
        s3 = client(s)
        for i in range(N_OBJECTS):
            s3.put_object(Bucket=BUCKET, Key=f"wal_005/{i:024X}", Body=body(i))
    finally:
        assert s.stop() == 0
    assert list((d / "index").glob("*.sst")), "clean shutdown flushes the index to table files"
    return d


def client(s: Walstore):
    return boto3.client("s3", **s.boto3_kwargs(),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def body(i: int) -> bytes:
    # Most objects are small enough to live inline in the index; every fifth is
    # a blob file (over 64 KiB).
    return f"object {i} ".encode() * (1 + i % 7 if i % 5 else 8000)


def blob_count(d: Path) -> int:
    return sum(1 for p in (d / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp")


def largest_table(d: Path) -> Path:
    return max((d / "index").glob("*.sst"), key=lambda p: p.stat().st_size)


def start_fails(d: Path, *needles: str) -> str:
    env = dict(os.environ, WALSTORE_ROOT_ACCESS_KEY="AKDAMAGETEST", WALSTORE_ROOT_SECRET_KEY="secret-damage-test")
    cp = subprocess.run([walstore_exe(), "serve", "--data-dir", str(d), "--listen", "127.0.0.1:0"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1, f"walstore started (or crashed) on a damaged index: {cp.returncode}\n{cp.stderr}"
    assert "panicked" not in cp.stderr, cp.stderr
    lines = [l for l in cp.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("walstore: "), cp.stderr
    for n in needles:
        assert n in lines[-1], lines[-1]
    return lines[-1]


def damage_current(d: Path):
    (d / "index" / "CURRENT").write_text("garbage\n")


def damage_manifest(d: Path):
    m = next((d / "index").glob("MANIFEST-*"))
    os.truncate(m, 100)


def remove_table(d: Path):
    largest_table(d).unlink()


def truncate_table(d: Path):
    t = largest_table(d)
    os.truncate(t, t.stat().st_size // 2)


@pytest.mark.parametrize("damage", [damage_current, damage_manifest, remove_table, truncate_table],
                         ids=["CURRENT", "MANIFEST", "missing-table", "truncated-table"])
def test_structural_damage_refuses_to_start(pristine: Path, tmp_path: Path, damage):
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    blobs = blob_count(d)
    damage(d)
    line = start_fails(d, "index", "damaged", "Restore")
    print(line)
    assert blob_count(d) == blobs, "a refused start touched the blobs"


def test_manifest_cut_at_a_record_boundary_is_refused(pristine: Path, tmp_path: Path):
    """RocksDB reads it as an older, empty state and drops the newer table
    files; walstore must notice the empty index next to blob files."""
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    blobs = blob_count(d)
    m = next((d / "index").glob("MANIFEST-*"))
    os.truncate(m, m.stat().st_size // 3)
    start_fails(d, "index", "empty", "blob files", "restore index/")
    assert blob_count(d) == blobs


def test_missing_index_next_to_blobs_refuses_to_start(pristine: Path, tmp_path: Path):
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    blobs = blob_count(d)
    shutil.rmtree(d / "index")
    start_fails(d, "no index", "orphan sweep")
    assert blob_count(d) == blobs
    assert not (d / "index").exists(), "the refused start created an empty index"
    cp = subprocess.run([walstore_exe(), "check", "--data-dir", str(d)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1 and "no index" in cp.stderr and "panicked" not in cp.stderr, cp.stderr


def test_flipped_byte_in_a_data_block_is_found_at_start_and_never_served(pristine: Path, tmp_path: Path):
    d = tmp_path / "data"
    shutil.copytree(pristine, d)
    t = largest_table(d)
    raw = bytearray(t.read_bytes())
    # Data blocks come first in a table file; the index, filter and footer last.
    pos = len(raw) // 5
    raw[pos] ^= 0x5A
    t.write_bytes(bytes(raw))

    s = Walstore(data_dir=d, buckets=[BUCKET]).start()
    try:
        wait_for(lambda: "the index is damaged" in s.log_path.read_text(), timeout=30,
                 what="the index-verify job to report the damage")
        status, metrics = s.get("/metrics")
        assert status == 200
        line = [l for l in metrics.decode().splitlines()
                if l.startswith("walstore_maintenance_errors_total") and 'task="index-verify"' in l]
        assert line and float(line[0].split()[-1]) >= 1, line
        # Every read returns the right bytes or fails; none returns wrong bytes.
        s3 = client(s)
        failed = 0
        for i in range(0, N_OBJECTS, 3):
            try:
                got = s3.get_object(Bucket=BUCKET, Key=f"wal_005/{i:024X}")["Body"].read()
                assert got == body(i), f"object {i} served wrong bytes"
            except ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 500, e.response
                failed += 1
        print(f"{failed} of {len(range(0, N_OBJECTS, 3))} reads refused, none wrong")
        assert s.get("/health/live")[0] == 200
    finally:
        assert s.stop() == 0
    cp = subprocess.run([walstore_exe(), "check", "--data-dir", str(d)], capture_output=True, text=True, timeout=60)
    assert cp.returncode != 0 and "panicked" not in cp.stderr, (cp.returncode, cp.stdout, cp.stderr)
    assert "orrupt" in cp.stdout + cp.stderr, (cp.stdout, cp.stderr)
