"""A full disk: walstore on a small tmpfs the test mounts itself.

What must hold (issue 7, "Disk full"):
- uploads that would eat into the reserve get ``503 SlowDown`` with ``Retry-After``
  (every SDK retries 503; WAL-G's aws-sdk-go treats SlowDown as throttling and
  backs off), and no staging file is left behind;
- GET, HEAD, LIST and DELETE keep working, nothing stored is damaged;
- uploads resume by themselves once space is freed (deletes + GC, or another
  process freeing space), without a restart;
- with the reserve switched off (``--reserve-space 0``) the disk really runs full
  (ENOSPC mid-write): still 503, still nothing damaged, and the index (RocksDB)
  is not wedged once space comes back;
- the real WAL-G ``wal-push`` started while the disk is full retries and succeeds
  when space is freed.

Needs root (mount). Skips with the reason otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import Walstore, missing_dependency, rmtree, tempdir, wait_for, walstore_exe
from pgcluster import walg_sandbox

BUCKET = "backups"
REGION = "de01"
FS_SIZE = 256 << 20
RESERVE = 16 << 20


@pytest.fixture
def small_fs():
    """A 256 MiB tmpfs, unmounted afterwards."""
    base = tempdir("walstore-diskfull-")
    mnt = base / "fs"
    mnt.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        rmtree(base)
        pytest.skip(missing_dependency(f"cannot mount a tmpfs (needs root): {cp.stderr.strip()}"))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        rmtree(base)


def free_bytes(p: Path) -> int:
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def client(store: Walstore):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", **store.boto3_kwargs(),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def payload(i: int, size: int) -> bytes:
    """Incompressible (lz4 keeps the size), distinct per i (no deduplication)."""
    return random.Random(i).randbytes(size)


def expect_slowdown(fn) -> dict:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as ei:
        fn()
    resp = ei.value.response
    assert resp["Error"]["Code"] == "SlowDown", resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 503, resp
    assert "retry-after" in resp["ResponseMetadata"]["HTTPHeaders"], resp["ResponseMetadata"]["HTTPHeaders"]
    return resp


def fill_until_refused(s3, data_dir: Path, size: int, limit: int = 60) -> list[str]:
    """PUTs `size`-byte objects until one gets 503; returns the stored keys."""
    from botocore.exceptions import ClientError

    keys = []
    for i in range(limit):
        key = f"filler/{size}/{i:04}"
        try:
            s3.put_object(Bucket=BUCKET, Key=key, Body=payload(10_000 + i, size))
        except ClientError as e:
            assert e.response["Error"]["Code"] == "SlowDown", e.response
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            return keys
        keys.append(key)
    raise AssertionError(f"{limit} PUTs of {size} bytes fit on a {FS_SIZE}-byte filesystem; "
                         f"{free_bytes(data_dir)} bytes still free")


def staging_files(data_dir: Path) -> list[str]:
    return os.listdir(data_dir / "blobs" / "tmp")


def check_offline(data_dir: Path) -> None:
    cp = subprocess.run([walstore_exe(), "check", "--data-dir", str(data_dir)], capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0, f"walstore check failed:\n{cp.stdout}\n{cp.stderr}"


def start(data_dir: Path, *extra: str) -> Walstore:
    # The data dir is the mount point, so the server log (next to it) is not on the small fs.
    return Walstore(data_dir=data_dir, region=REGION, buckets=[BUCKET],
                    extra_args=["--gc-grace", "0s", "--gc-interval", "1s", *extra]).start()


def test_reserve_refuses_uploads_and_writes_resume_when_space_is_freed(small_fs):
    s = start(small_fs, "--reserve-space", f"{RESERVE}")
    try:
        s3 = client(s)
        kept = {f"kept/{i}": payload(i, 1 << 20) for i in range(5)}
        for k, v in kept.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=v)

        fillers = fill_until_refused(s3, small_fs, 4 << 20)
        assert fillers, "not a single 4 MiB upload fitted"
        # The reserve holds: uploads stopped before eating into it.
        assert free_bytes(small_fs) >= RESERVE - (1 << 20), free_bytes(small_fs)
        resp = expect_slowdown(lambda: s3.put_object(Bucket=BUCKET, Key="refused", Body=payload(1, 8 << 20)))
        assert "disk" in resp["Error"]["Message"].lower() or "storage" in resp["Error"]["Message"].lower(), resp
        # A multipart part is refused the same way.
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
        expect_slowdown(lambda: s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=up, PartNumber=1,
                                               Body=payload(2, 8 << 20)))
        s3.abort_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=up)
        assert staging_files(small_fs) == [], "a refused upload left a staging file"

        # Reads, listings and deletes keep working at the reserve.
        for k, v in kept.items():
            assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
            assert s3.head_object(Bucket=BUCKET, Key=k)["ContentLength"] == len(v)
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="filler/")["Contents"]]
        assert listed == sorted(fillers)
        status, metrics = s.get("/metrics")
        assert status == 200
        reserve_line = [l for l in metrics.decode().splitlines() if l.startswith("walstore_data_dir_reserve_bytes ")]
        assert reserve_line == [f"walstore_data_dir_reserve_bytes {RESERVE}"], reserve_line

        # Free space: deletes, then GC (grace 0 s, every second) unlinks the blobs.
        before = free_bytes(small_fs)
        r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in fillers[: len(fillers) // 2 + 1]]})
        assert not r.get("Errors"), r
        wait_for(lambda: free_bytes(small_fs) >= before + (8 << 20), timeout=30, what="GC to free the deleted blobs")
        # Writes resume by themselves: no restart, no operator action.
        s3.put_object(Bucket=BUCKET, Key="after", Body=payload(3, 8 << 20))
        assert s3.get_object(Bucket=BUCKET, Key="after")["Body"].read() == payload(3, 8 << 20)
    finally:
        code = s.stop()
    assert code == 0
    check_offline(small_fs)
    s = start(small_fs, "--reserve-space", f"{RESERVE}")
    try:
        s3 = client(s)
        for k, v in kept.items():
            assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v, f"{k} damaged after the disk was full"
    finally:
        assert s.stop() == 0


def test_really_full_disk_without_reserve(small_fs):
    """ENOSPC mid-write: 503, nothing damaged, the index recovers once space is back."""
    s = start(small_fs, "--reserve-space", "0")
    ballast = small_fs / "ballast"
    try:
        s3 = client(s)
        kept = {f"kept/{i}": payload(100 + i, 512 << 10) for i in range(4)}
        for k, v in kept.items():
            s3.put_object(Bucket=BUCKET, Key=k, Body=v)
        # Another process takes all but 6 MiB; 4 MiB uploads then hit ENOSPC.
        with open(ballast, "wb") as f:
            chunk = b"\0" * (1 << 20)
            while free_bytes(small_fs) > (6 << 20):
                f.write(chunk)
                f.flush()
        fill_until_refused(s3, small_fs, 4 << 20, limit=10)
        assert staging_files(small_fs) == [], "the failed write left its staging file"
        for k, v in kept.items():
            assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
        s3.list_objects_v2(Bucket=BUCKET)
        # Make the disk completely full, then give the space back.
        with open(ballast, "ab") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        expect_slowdown(lambda: s3.put_object(Bucket=BUCKET, Key="nope", Body=payload(5, 1 << 20)))
        assert "No space left on device" in s.log_path.read_text(), "the writes never reached ENOSPC"
        # An index-only write on a 100 % full disk: done (RocksDB's preallocated
        # WAL has room) or refused with 503, never a wedged index.
        from botocore.exceptions import ClientError
        try:
            s3.delete_object(Bucket=BUCKET, Key="kept/1")
            kept.pop("kept/1")
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503, e.response
        ballast.unlink()
        # No restart: the next writes and deletes succeed.
        s3.put_object(Bucket=BUCKET, Key="after", Body=payload(6, 4 << 20))
        s3.delete_object(Bucket=BUCKET, Key="kept/0")
        kept.pop("kept/0")
        assert s3.get_object(Bucket=BUCKET, Key="after")["Body"].read() == payload(6, 4 << 20)
        for k, v in kept.items():
            assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == v
    finally:
        code = s.stop()
    assert code == 0
    check_offline(small_fs)


# -- the real client ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    yield from walg_sandbox(bool(os.environ.get("WALSTORE_KEEP")))


def test_walg_wal_push_retries_through_a_full_disk(sandbox, small_fs):
    s = start(small_fs, "--reserve-space", f"{RESERVE}", "--delete-protection", "allow")
    sandbox.logs["walstore"] = s.log_path
    try:
        s3 = client(s)
        fillers = fill_until_refused(s3, small_fs, 4 << 20)
        env = sandbox.envdir("diskfull", {
            "AWS_ENDPOINT": s.endpoint, "AWS_REGION": REGION, "AWS_S3_FORCE_PATH_STYLE": "true",
            "WALG_DISABLE_S3_SSE": "true", "WALG_S3_PREFIX": f"s3://{BUCKET}/spilo/full/wal/15",
            "AWS_ACCESS_KEY_ID": s.access_key, "AWS_SECRET_ACCESS_KEY": s.secret_key,
            # Incompressible bytes: lz4 keeps the 16 MiB, more than the free space above the reserve.
            "WALG_COMPRESSION_METHOD": "lz4",
        })
        seg_name = "000000010000000000000003"
        seg = sandbox.write_file(sandbox.mkdir("pg_wal") / seg_name, payload(42, 16 << 20))
        refused_before = s.log_path.read_text().count("write refused: insufficient storage")
        result: dict = {}

        def push():
            result["cp"] = sandbox.walg(env, "wal-push", str(seg), check=False, timeout=240)

        t = threading.Thread(target=push)
        started = time.monotonic()
        t.start()
        try:
            wait_for(lambda: s.log_path.read_text().count("write refused: insufficient storage") > refused_before,
                     timeout=60, what="WAL-G's push to be refused")
        except TimeoutError:
            t.join(timeout=5)
            cp = result.get("cp")
            raise AssertionError(f"wal-push was never refused; it {'is still running' if cp is None else 'exited'}"
                                 + (f" {cp.returncode}:\n{cp.stdout[-2000:]}\n{cp.stderr[-3000:]}" if cp else "")
                                 + f"\nserver log:\n{s.log_path.read_text()[-3000:]}") from None
        assert t.is_alive(), f"wal-push gave up instead of retrying: {result.get('cp')}"
        r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in fillers]})
        assert not r.get("Errors"), r
        t.join(timeout=250)
        assert not t.is_alive(), "wal-push did not finish"
        cp = result["cp"]
        assert cp.returncode == 0, f"wal-push failed:\n{cp.stdout[-2000:]}\n{cp.stderr[-4000:]}"
        took = time.monotonic() - started
        fetched = sandbox.mkdir("fetched") / seg_name
        sandbox.walg(env, "wal-fetch", seg_name, str(fetched))
        assert fetched.read_bytes() == seg.read_bytes()
        print(f"wal-push through a full disk: refused, retried, succeeded {took:.1f} s after start")
    finally:
        assert s.stop() == 0
    check_offline(small_fs)
    shutil.rmtree(sandbox.base / "env-diskfull", ignore_errors=True)
