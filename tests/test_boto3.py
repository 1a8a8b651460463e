"""boto3 against walstore, at boto3's default settings.

Nothing here lowers `request_checksum_calculation` / `response_checksum_validation`:
boto3 ≥ 1.36 computes a CRC32 for every upload and validates checksums of
whole-object downloads, and the server must cope. Note how botocore places that
checksum (botocore.httpchecksum): over plain http it signs the payload and sends
`x-amz-checksum-*` as a header; over https it streams the body aws-chunked with
`x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER` and the checksum in a
trailer. The trailer path is exercised against walstore's native TLS (the
`s3_tls` fixture: `serve --tls-cert/--tls-key` with a certificate from a CA made
by the test, see tlscerts.py), with boto3 verifying the server against that CA.

CRC32C and CRC64NVME need `awscrt` in botocore (MissingDependencyException
without it); those cases are skipped, with that reason, when it is absent.
Expected checksums are computed here independently of botocore.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.exceptions import ClientError

from harness import missing_dependency

BUCKET = "test"
MiB = 1 << 20


# ---------------------------------------------------------------- helpers


def _crc_table(poly: int, width: int) -> list[int]:
    mask = (1 << width) - 1
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c & mask)
    return table


_CRC32C = _crc_table(0x82F63B78, 32)  # Castagnoli, reflected
_CRC64NVME = _crc_table(0x9A6C9329AC4BC9B5, 64)  # CRC-64/NVME, reflected


def _crc_reflected(table: list[int], width: int, data: bytes) -> int:
    mask = (1 << width) - 1
    c = mask
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ mask


def crc32c(data: bytes) -> int:
    return _crc_reflected(_CRC32C, 32, data)


def crc64nvme(data: bytes) -> int:
    return _crc_reflected(_CRC64NVME, 64, data)


def expected_checksum(algorithm: str, data: bytes) -> str:
    """The base64 value S3 reports in `x-amz-checksum-<algorithm>`."""
    raw = {
        "CRC32": lambda: zlib.crc32(data).to_bytes(4, "big"),
        "CRC32C": lambda: crc32c(data).to_bytes(4, "big"),
        "CRC64NVME": lambda: crc64nvme(data).to_bytes(8, "big"),
        "SHA1": lambda: hashlib.sha1(data).digest(),
        "SHA256": lambda: hashlib.sha256(data).digest(),
    }[algorithm]()
    return base64.b64encode(raw).decode()


def test_reference_crcs():
    """The independent CRCs above match the published check values."""
    assert crc32c(b"123456789") == 0xE3069283
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888
    assert expected_checksum("CRC32", b"123456789") == base64.b64encode(bytes.fromhex("cbf43926")).decode()


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def http_status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def has_awscrt() -> bool:
    try:
        import awscrt  # noqa: F401
    except ImportError:
        return False
    return True


class Recorder:
    """Keeps the headers of requests boto3 sends (event `before-send`)."""

    def __init__(self, client):
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3.*", self._record)

    def _record(self, request, **_):
        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
        self.requests.append((request.method, request.url, headers))

    def last(self, method: str) -> dict[str, str]:
        return [h for m, _, h in self.requests if m == method][-1]


@pytest.fixture
def s3_tls(tls_server):
    """A default boto3 client talking https to walstore's native TLS, verifying it with the test CA."""
    kw = tls_server.boto3_kwargs()
    assert kw["endpoint_url"].startswith("https://") and kw["verify"] == str(tls_server.ca)
    return boto3.client("s3", **kw)


# ---------------------------------------------------------------- tests


def test_versions():
    """Records which clients ran (pytest -rA / -v shows it) and that boto3 has default checksums."""
    print(f"boto3 {boto3.__version__} botocore {botocore.__version__} awscrt={'yes' if has_awscrt() else 'no'}")
    major, minor = (int(x) for x in boto3.__version__.split(".")[:2])
    assert (major, minor) >= (1, 36), "boto3 < 1.36 does not send flexible checksums by default"


def test_put_get_head_delete(s3):
    data = os.urandom(100_000)
    put = s3.put_object(Bucket=BUCKET, Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                        Metadata={"owner": "db1"})
    etag = put["ETag"]
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    # boto3's default CRC32 was verified and stored.
    assert put["ChecksumCRC32"] == expected_checksum("CRC32", data)

    got = s3.get_object(Bucket=BUCKET, Key="dir/obj.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"owner": "db1"}

    head = s3.head_object(Bucket=BUCKET, Key="dir/obj.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == etag

    listed = s3.list_objects_v2(Bucket=BUCKET)
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed["Contents"]] == [("dir/obj.bin", len(data), etag)]

    assert s3.delete_object(Bucket=BUCKET, Key="dir/obj.bin")["ResponseMetadata"]["HTTPStatusCode"] == 204
    # Deleting a missing key is not an error in S3.
    assert s3.delete_object(Bucket=BUCKET, Key="dir/obj.bin")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0

    # An empty object.
    s3.put_object(Bucket=BUCKET, Key="empty", Body=b"")
    assert s3.get_object(Bucket=BUCKET, Key="empty")["Body"].read() == b""


def test_list_v2_pagination_delimiter_and_delete_objects(s3):
    flat = [f"many/k{i:04d}" for i in range(1050)]
    nested = [f"many/dir{j:02d}/x" for j in range(50)]
    keys = flat + nested
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=k.encode()), keys))

    paginator = s3.get_paginator("list_objects_v2")

    # No delimiter: every key, in order, over at least two pages of at most 1000.
    pages = list(paginator.paginate(Bucket=BUCKET, Prefix="many/"))
    assert len(pages) >= 2
    assert all(p["KeyCount"] <= 1000 for p in pages)
    assert pages[0]["IsTruncated"] and not pages[-1]["IsTruncated"]
    got = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert got == sorted(keys)

    # With a delimiter: 1050 keys and 50 common prefixes, no duplicates across pages.
    pages = list(paginator.paginate(Bucket=BUCKET, Prefix="many/", Delimiter="/"))
    assert len(pages) >= 2
    got_keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    got_prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    assert got_keys == sorted(flat)
    assert got_prefixes == sorted(f"many/dir{j:02d}/" for j in range(50))
    assert sum(p["KeyCount"] for p in pages) == 1100

    # Small pages.
    pages = list(paginator.paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 300}))
    assert [p["KeyCount"] for p in pages] == [300, 300, 300, 200]

    # ListObjects v1 paginates with markers too.
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=BUCKET, Delimiter="/", Prefix="many/"))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == sorted(flat)

    # DeleteObjects in S3's maximum batch (1000), then the rest; boto3 adds its checksum.
    deleted = []
    for batch in (keys[:1000], keys[1000:]):
        r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in batch]})
        assert not r.get("Errors"), r.get("Errors")
        deleted += [d["Key"] for d in r["Deleted"]]
    assert sorted(deleted) == sorted(keys)
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    # Quiet mode reports nothing for successes; missing keys count as deleted.
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "nope"}], "Quiet": True})
    assert not r.get("Deleted") and not r.get("Errors")


def test_multipart_upload_file_40mib(s3, tmp_path):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = os.urandom(40 * MiB)
    src.write_bytes(data)
    # Default TransferConfig: multipart above 8 MiB, 8 MiB parts → 5 parts.
    s3.upload_file(str(src), BUCKET, "big/file.bin")
    head = s3.head_object(Bucket=BUCKET, Key="big/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-5"'), head["ETag"]
    # s3transfer asks for CRC32 on CreateMultipartUpload and sends a CRC32 per
    # part: S3 then reports a composite checksum (CRC32 of the part CRC32s, "-5").
    head = s3.head_object(Bucket=BUCKET, Key="big/file.bin", ChecksumMode="ENABLED")
    part_crcs = b"".join(zlib.crc32(data[i: i + 8 * MiB]).to_bytes(4, "big") for i in range(0, len(data), 8 * MiB))
    assert head.get("ChecksumCRC32") == f"{expected_checksum('CRC32', part_crcs)}-5", head
    assert head.get("ChecksumType") == "COMPOSITE"
    s3.download_file(BUCKET, "big/file.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    # A range across the first part boundary.
    r = s3.get_object(Bucket=BUCKET, Key="big/file.bin", Range=f"bytes={8 * MiB - 8}-{8 * MiB + 7}")
    assert r["Body"].read() == data[8 * MiB - 8: 8 * MiB + 8]
    # Part 2 by number.
    r = s3.get_object(Bucket=BUCKET, Key="big/file.bin", PartNumber=2)
    assert r["PartsCount"] == 5
    assert r["Body"].read() == data[8 * MiB: 16 * MiB]
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_copy_object_shares_bytes(server, s3):
    data = os.urandom(4 * MiB)
    src = s3.put_object(Bucket=BUCKET, Key="copy/src", Body=data)
    blobs = server.data_dir / "blobs"
    before = dir_bytes(blobs)
    r = s3.copy_object(Bucket=BUCKET, Key="copy/dst", CopySource={"Bucket": BUCKET, "Key": "copy/src"})
    assert r["CopyObjectResult"]["ETag"] == src["ETag"]
    after = dir_bytes(blobs)
    assert after - before < len(data) // 4, f"blobs grew by {after - before} bytes on a copy of {len(data)}"
    assert s3.get_object(Bucket=BUCKET, Key="copy/dst")["Body"].read() == data
    # Deleting the source keeps the copy readable (the blob is reference-counted).
    s3.delete_object(Bucket=BUCKET, Key="copy/src")
    assert s3.get_object(Bucket=BUCKET, Key="copy/dst")["Body"].read() == data
    # Same bytes uploaded again under another key are not stored twice either.
    before = dir_bytes(blobs)
    s3.put_object(Bucket=BUCKET, Key="copy/again", Body=data)
    assert dir_bytes(blobs) - before < len(data) // 4


def test_presigned_urls(s3):
    data = b"presigned body \x00\xff" * 100
    s3.put_object(Bucket=BUCKET, Key="pre/get", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre/get"}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert r.read() == data

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "pre/put"}, ExpiresIn=300)
    u = urllib.parse.urlsplit(put_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("PUT", f"{u.path}?{u.query}", body=data, headers={"Content-Length": str(len(data))})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, body
    assert s3.get_object(Bucket=BUCKET, Key="pre/put")["Body"].read() == data

    expired = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre/get"}, ExpiresIn=1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired, timeout=30)
    assert e.value.code == 403
    assert b"<Code>AccessDenied</Code>" in e.value.read()


ALGORITHMS = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]


def _checksum_roundtrip(client, algorithm: str, transport: str) -> None:
    if algorithm in ("CRC32C", "CRC64NVME") and not has_awscrt():
        pytest.skip(missing_dependency(f"botocore needs awscrt to compute {algorithm} (MissingDependencyException); pip install awscrt"))
    rec = Recorder(client)
    data = os.urandom(300_000) + b"tail"
    want = expected_checksum(algorithm, data)
    key = f"sum/{algorithm}"
    put = client.put_object(Bucket=BUCKET, Key=key, Body=data, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"] == want

    sent = rec.last("PUT")
    header = f"x-amz-checksum-{algorithm.lower()}"
    if transport == "https":
        # The aws-chunked path: no header checksum, a trailer, an unsigned streaming payload.
        assert sent.get("x-amz-content-sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", sent
        assert sent.get("x-amz-trailer") == header, sent
        assert "aws-chunked" in sent.get("content-encoding", ""), sent
    else:
        assert sent.get(header) == want, sent

    got = client.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == want
    assert got["Body"].read() == data  # botocore validates the checksum while reading
    assert got.get("ContentEncoding") in (None, ""), "aws-chunked must not be stored as a content coding"
    head = client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == want
    assert head["ContentLength"] == len(data)
    # A ranged GET carries no whole-object checksum.
    part = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-9", ChecksumMode="ENABLED")
    assert part["Body"].read() == data[:10]
    assert f"Checksum{algorithm}" not in part


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_roundtrip_http_header(s3, algorithm):
    _checksum_roundtrip(s3, algorithm, "http")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_roundtrip_https_trailer(s3_tls, algorithm):
    _checksum_roundtrip(s3_tls, algorithm, "https")


def test_https_default_upload_and_multipart(s3_tls, tmp_path):
    """Default put_object and upload_file over https: aws-chunked CRC32 trailers on every part."""
    rec = Recorder(s3_tls)
    data = os.urandom(70_000)
    put = s3_tls.put_object(Bucket=BUCKET, Key="tls/small", Body=data)
    assert rec.last("PUT").get("x-amz-trailer") == "x-amz-checksum-crc32"
    assert put["ChecksumCRC32"] == expected_checksum("CRC32", data)
    assert s3_tls.get_object(Bucket=BUCKET, Key="tls/small")["Body"].read() == data

    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    big = os.urandom(20 * MiB + 12345)
    src.write_bytes(big)
    s3_tls.upload_file(str(src), BUCKET, "tls/big")
    parts = [h for m, u, h in rec.requests if m == "PUT" and "partNumber=" in u]
    assert len(parts) == 3 and all(h.get("x-amz-trailer") == "x-amz-checksum-crc32" for h in parts)
    s3_tls.download_file(BUCKET, "tls/big", str(dst))
    assert dst.read_bytes() == big


def test_wrong_checksum_is_bad_digest(s3):
    data = b"some bytes that do not hash to zero"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="bad/crc", Body=data, ChecksumCRC32="AAAAAA==")
    assert error_code(e.value) == "BadDigest"
    assert http_status(e.value) == 400
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="bad/sha", Body=data,
                      ChecksumSHA256=base64.b64encode(hashlib.sha256(b"other").digest()).decode())
    assert error_code(e.value) == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="bad/md5", Body=data,
                      ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert error_code(e.value) == "BadDigest"
    # Nothing was stored under any of those keys.
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="bad/")["KeyCount"] == 0


def _put_unsigned_trailer(server, key: str, body: bytes, trailer: str | None, decoded_length: int):
    """PUT an aws-chunked body byte for byte, signed by botocore's own SigV4 signer as
    STREAMING-UNSIGNED-PAYLOAD-TRAILER (what boto3 does over https), over plain http."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded_length)}
    if trailer:
        headers["x-amz-trailer"] = trailer
    req = AWSRequest(method="PUT", url=f"{server.endpoint}/{BUCKET}/{key}", data=body, headers=headers)
    # Makes the signer use STREAMING-UNSIGNED-PAYLOAD-TRAILER as the payload hash.
    req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32", "name": trailer}}
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", server.region).add_auth(req)
    prepared = req.prepare()
    assert prepared.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("PUT", f"/{BUCKET}/{key}", body=body, headers=dict(prepared.headers))
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def test_aws_chunked_trailer_edge_cases(server, s3):
    """The trailer framing byte for byte, for the cases SDKs produce and the ones they must not."""
    data = b"hello"
    crc = expected_checksum("CRC32", data)
    cases = [
        # (key, body, declared trailer, expected status, expected code)
        ("ok", f"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n", "x-amz-checksum-crc32", 200, None),
        ("wrong-value", "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "x-amz-checksum-crc32", 400,
         "BadDigest"),
        # Declared but never sent: S3 refuses (it must not store an unverified object).
        ("missing", "5\r\nhello\r\n0\r\n\r\n", "x-amz-checksum-crc32", 400, "MalformedTrailerError"),
        # Declared CRC32, sent SHA256.
        ("other-name", f"5\r\nhello\r\n0\r\nx-amz-checksum-sha256:{crc}\r\n\r\n", "x-amz-checksum-crc32", 400,
         "MalformedTrailerError"),
        # Sent without being declared.
        ("undeclared", f"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n", None, 400, None),
        # No trailer and no final empty line (aws-sdk-js v3 without a checksum ends with "0\r\n").
        ("short-end", "5\r\nhello\r\n0\r\n", None, 200, None),
        # The final empty line after a declared trailer may be missing too.
        ("trailer-short-end", f"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n", "x-amz-checksum-crc32", 200,
         None),
        # Cut inside the data.
        ("truncated", "5\r\nhel", "x-amz-checksum-crc32", 400, None),
    ]
    for key, body, trailer, status, code in cases:
        got_status, text = _put_unsigned_trailer(server, key, body.encode(), trailer, len(data))
        assert got_status == status, f"{key}: {got_status} {text}"
        if code:
            assert f"<Code>{code}</Code>" in text, f"{key}: {text}"
        if status == 200:
            got = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
            assert got["Body"].read() == data, key
        else:
            with pytest.raises(ClientError) as e:
                s3.head_object(Bucket=BUCKET, Key=key)
            assert http_status(e.value) == 404, f"{key} was stored although the PUT failed"
    assert s3.head_object(Bucket=BUCKET, Key="ok", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc


def test_ranges(s3):
    data = bytes(range(100))
    s3.put_object(Bucket=BUCKET, Key="range", Body=data)
    r = s3.get_object(Bucket=BUCKET, Key="range", Range="bytes=0-9")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == "bytes 0-9/100"
    assert r["ContentLength"] == 10
    assert r["Body"].read() == data[:10]
    r = s3.get_object(Bucket=BUCKET, Key="range", Range="bytes=-5")
    assert r["ContentRange"] == "bytes 95-99/100"
    assert r["Body"].read() == data[-5:]
    r = s3.get_object(Bucket=BUCKET, Key="range", Range="bytes=90-")
    assert r["Body"].read() == data[90:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="range", Range="bytes=100-200")
    assert http_status(e.value) == 416
    assert error_code(e.value) == "InvalidRange"


def test_conditionals(s3):
    put = s3.put_object(Bucket=BUCKET, Key="cond", Body=b"v1")
    etag = put["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=BUCKET, Key="cond", Body=b"v2", IfNoneMatch="*")
    assert http_status(e.value) == 412
    assert error_code(e.value) == "PreconditionFailed"
    assert s3.get_object(Bucket=BUCKET, Key="cond")["Body"].read() == b"v1"
    # If-None-Match: * on a new key creates it.
    s3.put_object(Bucket=BUCKET, Key="cond-new", Body=b"n", IfNoneMatch="*")

    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="cond", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert http_status(e.value) == 412
    assert error_code(e.value) == "PreconditionFailed"
    assert s3.get_object(Bucket=BUCKET, Key="cond", IfMatch=etag)["Body"].read() == b"v1"

    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="cond", IfNoneMatch=etag)
    assert http_status(e.value) == 304
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key="cond", IfNoneMatch=etag)
    assert http_status(e.value) == 304
    assert s3.get_object(Bucket=BUCKET, Key="cond", IfNoneMatch='"other"')["Body"].read() == b"v1"


def test_error_codes(s3):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="missing")
    assert error_code(e.value) == "NoSuchKey" and http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key="missing")
    assert http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="no-such-bucket", Key="k")
    assert error_code(e.value) == "NoSuchBucket" and http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="no-such-bucket")
    assert error_code(e.value) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    assert error_code(e.value) == "NoSuchBucket"

    s3.put_object(Bucket=BUCKET, Key="keep", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=BUCKET)
    assert error_code(e.value) == "BucketNotEmpty" and http_status(e.value) == 409

    for bad in ("Bad_Name", "ab", "-leading-dash"):
        with pytest.raises(ClientError) as e:
            s3.create_bucket(Bucket=bad)
        assert error_code(e.value) == "InvalidBucketName", bad

    # Create, list and delete a bucket of our own.
    s3.create_bucket(Bucket="second", CreateBucketConfiguration={"LocationConstraint": "de01"})
    assert "second" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="second", CreateBucketConfiguration={"LocationConstraint": "de01"})
    assert error_code(e.value) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
    s3.head_bucket(Bucket="second")
    s3.delete_bucket(Bucket="second")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="second")
    assert http_status(e.value) == 404


def test_unversioned_bucket_queries(s3, server):
    a = s3.put_object(Bucket=BUCKET, Key="v/a", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key="v/b", Body=b"bb")
    r = s3.list_object_versions(Bucket=BUCKET, Prefix="v/")
    versions = r["Versions"]
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions] == [("v/a", "null", True), ("v/b", "null", True)]
    assert versions[0]["ETag"] == a["ETag"] and versions[1]["Size"] == 2
    assert not r.get("DeleteMarkers")
    assert "Status" not in s3.get_bucket_versioning(Bucket=BUCKET)
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == server.region
    # versionId=null addresses the (only) version; any other id is refused, never
    # answered with the current object.
    assert s3.get_object(Bucket=BUCKET, Key="v/a", VersionId="null")["Body"].read() == b"a"
    assert s3.head_object(Bucket=BUCKET, Key="v/a", VersionId="null")["ContentLength"] == 1
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as e:
            call(Bucket=BUCKET, Key="v/a", VersionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
        assert http_status(e.value) == 400, call
