"""S3 semantics real clients rely on, checked with the clients themselves at their defaults.

- Signature Version 2: boto3's default presigned URL in us-east-1, boto3 with
  `signature_version="s3"` (the header form), s3cmd with `signature_v2 = True`; and
  `serve --signature-v2 off` refusing them with S3's error.
- A retried CompleteMultipartUpload answers exactly what the first one did.
- A checksum of the whole object sent on CompleteMultipartUpload is verified (BadDigest).
- Conditional writes (If-Match / If-None-Match on PutObject and CompleteMultipartUpload), with
  concurrent writers: exactly one wins.
- Conditional deletes: If-Match, x-amz-if-match-size, x-amz-if-match-last-modified-time on
  DeleteObject (boto3 and the AWS CLI) and their per-object forms in DeleteObjects.
"""
from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import Walstore, missing_dependency

BUCKET = "test"
MiB = 1 << 20


def code(e: pytest.ExceptionInfo) -> tuple[int, str]:
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


@pytest.fixture
def us_east(tmp_path):
    """A walstore in us-east-1, where boto3 presigns with Signature Version 2 by default."""
    s = Walstore(data_dir=tmp_path / "data-us-east", region="us-east-1", buckets=[BUCKET]).start()
    yield s
    assert s.stop() == 0, f"walstore failed; log {s.log_path}"


@pytest.fixture
def v2_off(tmp_path):
    s = Walstore(data_dir=tmp_path / "data-v2off", region="us-east-1", buckets=[BUCKET],
                 extra_args=["--signature-v2", "off"]).start()
    yield s
    assert s.stop() == 0, f"walstore failed; log {s.log_path}"


# --- Signature Version 2 -------------------------------------------------------------------

def test_boto3_default_presigned_url_in_us_east_1_is_v2_and_works(us_east):
    s3 = boto3.client("s3", **us_east.boto3_kwargs())
    data = b"presigned v2 \x00\xff" * 64
    s3.put_object(Bucket=BUCKET, Key="pre/v2", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre/v2"}, ExpiresIn=300)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    # What botocore produces by default here: the SigV2 query form, not X-Amz-Algorithm.
    assert {"AWSAccessKeyId", "Signature", "Expires"} <= set(query), url
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200 and r.read() == data
    # The signature covers the resource: the same URL for another key is refused.
    forged = url.replace("/pre/v2?", "/pre/other?")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(forged, timeout=30)
    assert e.value.code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()


def test_boto3_sigv2_header_form_covers_the_walg_operations(us_east, tmp_path):
    s3 = boto3.client("s3", config=Config(signature_version="s3"), **us_east.boto3_kwargs())
    body = os.urandom(100_000)
    s3.put_object(Bucket=BUCKET, Key="v2/a", Body=body, Metadata={"origin": "v2"})
    got = s3.get_object(Bucket=BUCKET, Key="v2/a")
    assert got["Body"].read() == body and got["Metadata"] == {"origin": "v2"}
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="v2/")["Contents"]] == ["v2/a"]
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="v2/mp")
    parts = []
    chunks = [os.urandom(5 * MiB), os.urandom(1000)]
    for n, chunk in enumerate(chunks, 1):
        r = s3.upload_part(Bucket=BUCKET, Key="v2/mp", UploadId=up["UploadId"], PartNumber=n, Body=chunk)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="v2/mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=BUCKET, Key="v2/mp")["Body"].read() == b"".join(chunks)
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "v2/a"}, {"Key": "v2/mp"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["v2/a", "v2/mp"] and not r.get("Errors")
    # A wrong secret is refused with S3's code for a bad signature.
    kw = dict(us_east.boto3_kwargs(), aws_secret_access_key="not-the-secret")
    bad = boto3.client("s3", config=Config(signature_version="s3", retries={"max_attempts": 1}), **kw)
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket=BUCKET, Key="v2/a")
    assert code(e) == (403, "SignatureDoesNotMatch")


def test_signature_v2_off_refuses_both_forms(v2_off):
    s3v4 = boto3.client("s3", config=Config(signature_version="s3v4"), **v2_off.boto3_kwargs())
    s3v4.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    s3v2 = boto3.client("s3", config=Config(signature_version="s3", retries={"max_attempts": 1}),
                        **v2_off.boto3_kwargs())
    with pytest.raises(ClientError) as e:
        s3v2.get_object(Bucket=BUCKET, Key="k")
    assert code(e) == (400, "InvalidRequest")
    url = boto3.client("s3", **v2_off.boto3_kwargs()).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "k"}, ExpiresIn=60)
    with pytest.raises(urllib.error.HTTPError) as he:
        urllib.request.urlopen(url, timeout=30)
    assert he.value.code == 400 and b"<Code>InvalidRequest</Code>" in he.value.read()


def s3cmd_exe() -> str:
    exe = shutil.which("s3cmd") or os.path.join(os.path.dirname(sys.executable), "s3cmd")
    if not os.path.exists(exe):
        pytest.skip(missing_dependency("s3cmd is not installed (scripts/install-test-deps.sh installs it)"))
    return exe


@pytest.mark.parametrize("v2", [True, False], ids=["signature_v2", "signature_v4"])
def test_s3cmd(us_east, tmp_path, v2):
    exe = s3cmd_exe()
    host = f"127.0.0.1:{us_east.port}"
    cfg = configparser.ConfigParser(interpolation=None)
    cfg["default"] = {
        "access_key": us_east.access_key, "secret_key": us_east.secret_key, "host_base": host,
        "host_bucket": host, "use_https": "False", "signature_v2": str(v2), "bucket_location": "us-east-1",
    }
    conf = tmp_path / "s3cfg"
    with open(conf, "w") as f:
        cfg.write(f)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))

    def run(*args: str) -> str:
        p = subprocess.run([exe, "-c", str(conf), "--no-progress", *args], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, f"s3cmd {' '.join(args)}: {p.stdout}{p.stderr}"
        return p.stdout

    run("put", str(src), f"s3://{BUCKET}/s3cmd/src.bin")
    assert f"s3://{BUCKET}/s3cmd/src.bin" in run("ls", f"s3://{BUCKET}/s3cmd/")
    out = tmp_path / "out.bin"
    run("get", f"s3://{BUCKET}/s3cmd/src.bin", str(out))
    assert out.read_bytes() == src.read_bytes()
    # s3cmd's multipart path (15 MiB chunks by default; force a small one).
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MiB))
    run("put", "--multipart-chunk-size-mb=5", str(big), f"s3://{BUCKET}/s3cmd/big.bin")
    run("get", "--force", f"s3://{BUCKET}/s3cmd/big.bin", str(out))
    assert out.read_bytes() == big.read_bytes()
    run("del", f"s3://{BUCKET}/s3cmd/src.bin", f"s3://{BUCKET}/s3cmd/big.bin")
    assert "s3cmd/" not in run("ls", "--recursive", f"s3://{BUCKET}/")


# --- CompleteMultipartUpload: retries and checksums ----------------------------------------

def upload_parts(s3, key: str, chunks: list[bytes], **create) -> tuple[str, list[dict]]:
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **create)
    parts = []
    for n, chunk in enumerate(chunks, 1):
        kw = {"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in create else {}
        r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=chunk, **kw)
        part = {"PartNumber": n, "ETag": r["ETag"]}
        part.update({k: v for k, v in r.items() if k.startswith("Checksum") and k != "ChecksumType"})
        parts.append(part)
    return up["UploadId"], parts


def test_retried_complete_answers_the_same(s3):
    chunks = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    upload_id, parts = upload_parts(s3, "mp/retry", chunks)
    first = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/retry", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    # The retry an SDK sends when the first answer was lost.
    again = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/retry", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    for field in ("ETag", "Key", "Bucket", "Location"):
        assert again[field] == first[field], field
    assert first["ETag"].endswith('-3"')
    assert s3.get_object(Bucket=BUCKET, Key="mp/retry")["Body"].read() == b"".join(chunks)
    # Another part list is not a retry of this completion.
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/retry", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts[:2]})
    assert code(e) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=BUCKET, Key="mp/retry", UploadId=upload_id)
    assert code(e) == (404, "NoSuchUpload")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_complete_verifies_a_composite_sha256(s3):
    chunks = [os.urandom(5 * MiB), b"last part"]
    upload_id, parts = upload_parts(s3, "mp/sha", chunks, ChecksumAlgorithm="SHA256")
    composite = b64(hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in chunks)).digest())
    wrong = b64(hashlib.sha256(b"something else").digest())
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/sha", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, ChecksumSHA256=f"{wrong}-2")
    assert code(e) == (400, "BadDigest")
    # The failed attempt left the upload as it was: completing with the right value works.
    r = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp/sha", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, ChecksumSHA256=f"{composite}-2")
    assert r["ChecksumSHA256"] == f"{composite}-2"
    assert s3.get_object(Bucket=BUCKET, Key="mp/sha")["Body"].read() == b"".join(chunks)
    head = s3.head_object(Bucket=BUCKET, Key="mp/sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == f"{composite}-2" and head.get("ChecksumType") == "COMPOSITE"


def test_complete_verifies_a_full_object_crc32_and_size(s3):
    chunks = [os.urandom(5 * MiB), os.urandom(123)]
    whole = b"".join(chunks)
    upload_id, parts = upload_parts(s3, "mp/crc", chunks, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    common = dict(Bucket=BUCKET, Key="mp/crc", UploadId=upload_id, MultipartUpload={"Parts": parts},
                  ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(ChecksumCRC32=crc32_b64(whole + b"x"), **common)
    assert code(e) == (400, "BadDigest")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(ChecksumCRC32=crc32_b64(whole), MpuObjectSize=len(whole) + 1, **common)
    assert code(e) == (400, "InvalidRequest")
    # An algorithm the upload was not created with cannot be checked: refused, not ignored.
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(ChecksumSHA1=b64(hashlib.sha1(whole).digest()), **common)
    assert code(e) == (400, "InvalidRequest")
    r = s3.complete_multipart_upload(ChecksumCRC32=crc32_b64(whole), MpuObjectSize=len(whole), **common)
    assert r["ChecksumCRC32"] == crc32_b64(whole) and r.get("ChecksumType") == "FULL_OBJECT"
    head = s3.head_object(Bucket=BUCKET, Key="mp/crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(whole) and head["ContentLength"] == len(whole)


# --- Conditional writes -------------------------------------------------------------------

def test_conditional_put_and_complete(s3):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="cw/k", Body=b"v1", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert code(e) == (404, "NoSuchKey")
    v1 = s3.put_object(Bucket=BUCKET, Key="cw/k", Body=b"v1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="cw/k", Body=b"v1 again", IfNoneMatch="*")
    assert code(e) == (412, "PreconditionFailed")
    v2 = s3.put_object(Bucket=BUCKET, Key="cw/k", Body=b"v2", IfMatch=v1)["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="cw/k", Body=b"v3", IfMatch=v1)  # stale ETag
    assert code(e) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=BUCKET, Key="cw/k")["Body"].read() == b"v2"

    upload_id, parts = upload_parts(s3, "cw/k", [b"multipart v3"])
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="cw/k", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert code(e) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="cw/k", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, IfMatch=v1)
    assert code(e) == (412, "PreconditionFailed")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="cw/k", UploadId=upload_id,
                                 MultipartUpload={"Parts": parts}, IfMatch=v2)
    assert s3.get_object(Bucket=BUCKET, Key="cw/k")["Body"].read() == b"multipart v3"


def test_concurrent_if_none_match_has_exactly_one_winner(s3):
    writers = 8
    for round_ in range(5):
        key = f"race/{round_}"
        barrier = threading.Barrier(writers)
        outcomes: list[object] = [None] * writers

        def write(i: int) -> None:
            barrier.wait()
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=f"writer {i}".encode(), IfNoneMatch="*")
                outcomes[i] = "won"
            except ClientError as exc:
                outcomes[i] = exc.response["Error"]["Code"]

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, outcomes
        assert all(o in ("PreconditionFailed", "ConditionalRequestConflict") for o in outcomes if o != "won"), outcomes
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == f"writer {winners[0]}".encode()


def test_concurrent_if_match_updates_are_serialised(s3):
    # Compare-and-swap counter: every increment that was acknowledged is in the final value.
    etag = s3.put_object(Bucket=BUCKET, Key="cas", Body=b"0")["ETag"]
    acknowledged = []
    lock = threading.Lock()

    def bump(worker: int) -> None:
        for _ in range(40):
            got = s3.get_object(Bucket=BUCKET, Key="cas")
            n = int(got["Body"].read())
            try:
                s3.put_object(Bucket=BUCKET, Key="cas", Body=str(n + 1).encode(), IfMatch=got["ETag"])
                with lock:
                    acknowledged.append(n + 1)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict")

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    final = int(s3.get_object(Bucket=BUCKET, Key="cas")["Body"].read())
    assert acknowledged and sorted(acknowledged) == list(range(1, final + 1)), (final, sorted(acknowledged))
    assert etag  # the first write was unconditional


# --- Conditional deletes ------------------------------------------------------------------

def test_conditional_delete_object(s3):
    etag = s3.put_object(Bucket=BUCKET, Key="cd/k", Body=b"12345")["ETag"]
    head = s3.head_object(Bucket=BUCKET, Key="cd/k")
    for kw in ({"IfMatch": '"ffffffffffffffffffffffffffffffff"'}, {"IfMatchSize": 4},
               {"IfMatchLastModifiedTime": head["LastModified"].replace(year=2001)}):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=BUCKET, Key="cd/k", **kw)
        assert code(e) == (412, "PreconditionFailed"), kw
    assert s3.get_object(Bucket=BUCKET, Key="cd/k")["Body"].read() == b"12345"
    s3.delete_object(Bucket=BUCKET, Key="cd/k", IfMatch=etag, IfMatchSize=5,
                     IfMatchLastModifiedTime=head["LastModified"])
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key="cd/k")
    assert code(e)[0] == 404
    # If-Match on a missing key: S3 answers 404 NoSuchKey; size/time alone: 204.
    for tag in (etag, "*"):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=BUCKET, Key="cd/k", IfMatch=tag)
        assert code(e) == (404, "NoSuchKey")
    s3.delete_object(Bucket=BUCKET, Key="cd/k", IfMatchSize=5)
    # If-Match: * deletes whatever is there.
    s3.put_object(Bucket=BUCKET, Key="cd/star", Body=b"x")
    s3.delete_object(Bucket=BUCKET, Key="cd/star", IfMatch="*")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="cd/")


def test_conditional_delete_objects(s3):
    keep = s3.put_object(Bucket=BUCKET, Key="cdm/keep", Body=b"keep")["ETag"]
    gone = s3.put_object(Bucket=BUCKET, Key="cdm/gone", Body=b"gone")["ETag"]
    s3.put_object(Bucket=BUCKET, Key="cdm/sized", Body=b"sized")
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "cdm/keep", "ETag": gone},  # wrong ETag
        {"Key": "cdm/gone", "ETag": gone},
        {"Key": "cdm/sized", "Size": 99},  # wrong size
        {"Key": "cdm/absent", "ETag": keep},  # no such object
    ]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["cdm/gone"]
    errors = {e["Key"]: e["Code"] for e in r["Errors"]}
    assert errors == {"cdm/keep": "PreconditionFailed", "cdm/sized": "PreconditionFailed",
                      "cdm/absent": "NoSuchKey"}
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="cdm/")["Contents"]]
    assert left == ["cdm/keep", "cdm/sized"]


def test_aws_cli_conditional_delete(server, tmp_path):
    aws = shutil.which("aws") or os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(aws):
        pytest.skip(missing_dependency("the AWS CLI is not installed (scripts/install-test-deps.sh installs it)"))
    s3 = boto3.client("s3", **server.boto3_kwargs())
    etag = s3.put_object(Bucket=BUCKET, Key="cli/k", Body=b"cli")["ETag"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_DEFAULT_REGION=server.region, AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([aws, "--endpoint-url", server.endpoint, "s3api", *args, "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=120)

    p = cli("delete-object", "--bucket", BUCKET, "--key", "cli/k", "--if-match", '"00000000000000000000000000000000"')
    assert p.returncode != 0 and "PreconditionFailed" in p.stderr, p.stderr
    p = cli("delete-object", "--bucket", BUCKET, "--key", "cli/k", "--if-match", etag)
    assert p.returncode == 0, p.stderr
    p = cli("list-objects-v2", "--bucket", BUCKET, "--prefix", "cli/")
    assert p.returncode == 0 and "Contents" not in (json.loads(p.stdout) if p.stdout.strip() else {}), p.stdout


def test_a_checksum_walstore_cannot_compute_is_refused_not_ignored(s3):
    data = b"needs sha512"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="sha512", Body=data, ChecksumSHA512=b64(hashlib.sha512(data).digest()))
    assert code(e) == (400, "InvalidRequest")
    assert "x-amz-checksum-sha512" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="sha512")


def test_list_parts_shows_each_parts_checksum(s3):
    chunks = [os.urandom(5 * MiB), b"last"]
    upload_id, parts = upload_parts(s3, "mp/lp", chunks, ChecksumAlgorithm="SHA256")
    listed = s3.list_parts(Bucket=BUCKET, Key="mp/lp", UploadId=upload_id)
    assert listed["ChecksumAlgorithm"] == "SHA256"
    assert [p["ChecksumSHA256"] for p in listed["Parts"]] == [b64(hashlib.sha256(c).digest()) for c in chunks]
    s3.abort_multipart_upload(Bucket=BUCKET, Key="mp/lp", UploadId=upload_id)


# --- Reads and listings -------------------------------------------------------------------

def test_not_modified_carries_the_validators(server, s3):
    etag = s3.put_object(Bucket=BUCKET, Key="nm", Body=b"body", CacheControl="max-age=60")["ETag"]
    head = s3.head_object(Bucket=BUCKET, Key="nm")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "nm"}, ExpiresIn=300)
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]}):
        req = urllib.request.Request(url, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 304, headers
        assert e.value.headers["ETag"] == etag
        assert e.value.headers["Last-Modified"] == head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        assert e.value.headers["Cache-Control"] == "max-age=60"
        assert e.value.read() == b""


def test_listing_details(server, s3):
    for k in ("a b/1", "a b/2", "a b/3", "z"):
        s3.put_object(Bucket=BUCKET, Key=k, Body=b"x")
    # FetchOwner: an Owner per object, and only when asked for.
    with_owner = s3.list_objects_v2(Bucket=BUCKET, FetchOwner=True)
    assert all("ID" in o["Owner"] for o in with_owner["Contents"]), with_owner["Contents"]
    assert all("Owner" not in o for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    # ContinuationToken is echoed; pages chain to the end.
    first = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=2)
    assert first["IsTruncated"] and "ContinuationToken" not in first
    second = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=2, ContinuationToken=first["NextContinuationToken"])
    assert second["ContinuationToken"] == first["NextContinuationToken"]
    assert [o["Key"] for o in first["Contents"] + second["Contents"]] == ["a b/1", "a b/2", "a b/3", "z"]
    assert not second["IsTruncated"]
    # max-keys=0: nothing, and not truncated (there is no next page to ask for).
    zero = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=0)
    assert zero["KeyCount"] == 0 and zero["IsTruncated"] is False and "Contents" not in zero
    # encoding-type=url (boto3 asks for it and decodes what S3 encodes): every element
    # comes back as sent, in both list versions.
    for r in (s3.list_objects(Bucket=BUCKET, Prefix="a b/", Delimiter="/"),
              s3.list_objects_v2(Bucket=BUCKET, Prefix="a b/", Delimiter="/")):
        assert r["Prefix"] == "a b/", r
        assert [o["Key"] for o in r["Contents"]] == ["a b/1", "a b/2", "a b/3"]
    v1 = s3.list_objects(Bucket=BUCKET, Prefix="a b/")
    assert all("ID" in o["Owner"] for o in v1["Contents"]), "ListObjects v1 lists owners"
    # v1's top-level Prefix is plain on the wire even with encoding-type=url.
    url = s3.generate_presigned_url("list_objects", Params={"Bucket": BUCKET, "Prefix": "a b/", "EncodingType": "url"})
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read().decode()
    assert "<Prefix>a b/</Prefix>" in body and "<Key>a%20b/1</Key>" in body, body


def test_content_encoding_keeps_the_clients_formatting(s3):
    # Stored as sent (walstore drops only `aws-chunked`, a transfer coding; the unit test
    # `metadata_from_headers` covers that removal keeping the rest's formatting).
    s3.put_object(Bucket=BUCKET, Key="ce", Body=b"x", ContentEncoding="deflate, gzip")
    assert s3.head_object(Bucket=BUCKET, Key="ce")["ContentEncoding"] == "deflate, gzip"


def test_create_bucket_twice_by_its_owner(server, us_east):
    de = boto3.client("s3", **server.boto3_kwargs())
    de.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": server.region})
    with pytest.raises(ClientError) as e:
        de.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": server.region})
    assert code(e) == (409, "BucketAlreadyOwnedByYou")
    us = boto3.client("s3", **us_east.boto3_kwargs())
    us.create_bucket(Bucket="mine")
    us.create_bucket(Bucket="mine")  # us-east-1: 200, as S3 answers there
    assert "mine" in [b["Name"] for b in us.list_buckets()["Buckets"]]
