#!/usr/bin/env python3
"""Writes the request seeds of the fuzz corpus (router, sigv4_header, sigv4_presigned,
headers, chunked) from requests signed by botocore, so the signatures come from an
independent SigV4 implementation and the seeds reach the signature comparison.

Two sources:
- boto3 itself: each client call is captured at botocore's `before-send` event (after
  signing, before any network I/O), so headers and aws-chunked bodies are exactly what
  boto3 sends;
- the requests WAL-G (aws-sdk-go v1) sends, with the header sets captured on the wire
  (see the shared reference notes, walg-s3-protocol.md), signed with botocore's S3SigV4Auth.

The clock is frozen at 2026-11-25T17:12:44Z; s3api/tests/fuzz.rs verifies at that time
with the same key pair. Run it with the test venv (boto3 installed):
    $WALSTORE_VENV/bin/python s3api/tests/fuzz_corpus/make_request_seeds.py
Seeds named `ok-*` must verify; the fuzz test checks that.
"""
import datetime
import hashlib
import hmac
import os
import sys

import boto3
import botocore.auth
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

NOW = datetime.datetime(2026, 11, 25, 17, 12, 44, tzinfo=datetime.timezone.utc)
botocore.auth.get_current_datetime = lambda **_: NOW
try:  # with awscrt installed botocore signs S3 requests with the CRT signer
    import botocore.crt.auth

    botocore.crt.auth.get_current_datetime = lambda **_: NOW
except ImportError:
    pass
AKID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:9000"
OUT = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data)


def request_text(method, url, headers):
    target = url.split(HOST, 1)[1] or "/"
    lines = [f"{method} {target}"]
    lines += [f"{k.lower()}: {v}" for k, v in headers]
    return ("\n".join(lines) + "\n").encode()


class Captured(Exception):
    pass


def boto3_requests():
    """(name, method, url, headers, body) for a set of boto3 calls."""
    out = []
    client = boto3.client(
        "s3",
        endpoint_url=f"https://{HOST}",
        region_name="de01",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    name = None

    def capture(request, **_):
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()]
        if not any(k.lower() == "host" for k, _ in headers):
            headers.insert(0, ("host", HOST))
        out.append((name, request.method, request.url, headers, body or b""))
        raise Captured()

    client.meta.events.register("before-send", capture)
    calls = [
        ("put-object-trailer", "put_object", dict(Bucket="bkt", Key="pfx/wal_005/000000010000000000000003.lz4", Body=b"x" * 100)),
        ("put-object-empty", "put_object", dict(Bucket="bkt", Key="pfx/empty", Body=b"")),
        ("upload-part", "upload_part", dict(Bucket="bkt", Key="big/object", UploadId="0123456789abcdef", PartNumber=2, Body=b"part" * 64)),
        ("get-object-range", "get_object", dict(Bucket="bkt", Key="pfx/wal_005/000000010000000000000001.lz4", Range="bytes=0-1023")),
        ("get-object-conditional", "get_object", dict(Bucket="bkt", Key="a/b c+d", IfNoneMatch='"9b2cf535f27731c974343645a3985328"', IfModifiedSince=datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc))),
        ("head-object", "head_object", dict(Bucket="bkt", Key="pfx/basebackups_005/base_000000010000000000000002/metadata.json", IfMatch='"abc"')),
        ("list-objects-v2", "list_objects_v2", dict(Bucket="bkt", Prefix="pfx/wal_005/", Delimiter="/", ContinuationToken="tok1")),
        ("list-objects-v1", "list_objects", dict(Bucket="bkt", Prefix="pfx/", Delimiter="/", MaxKeys=1)),
        ("list-versions", "list_object_versions", dict(Bucket="bkt", Prefix="pfx/")),
        ("list-uploads", "list_multipart_uploads", dict(Bucket="bkt")),
        ("list-parts", "list_parts", dict(Bucket="bkt", Key="big/object", UploadId="0123456789abcdef")),
        ("delete-objects", "delete_objects", dict(Bucket="bkt", Delete={"Objects": [{"Key": "pfx/wal_005/000000010000000000000001.lz4"}, {"Key": "a&b<c>"}], "Quiet": True})),
        ("create-mpu", "create_multipart_upload", dict(Bucket="bkt", Key="big/object", StorageClass="STANDARD", Metadata={"owner": "db1"})),
        ("complete-mpu", "complete_multipart_upload", dict(Bucket="bkt", Key="big/object", UploadId="0123456789abcdef", MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"e1"'}, {"PartNumber": 2, "ETag": '"e2"', "ChecksumCRC32": "AAAAAA=="}]})),
        ("abort-mpu", "abort_multipart_upload", dict(Bucket="bkt", Key="big/object", UploadId="0123456789abcdef")),
        ("copy-object", "copy_object", dict(Bucket="bkt", Key="dst/key", CopySource={"Bucket": "bkt", "Key": "src/key"}, CopySourceIfMatch='"abc"', MetadataDirective="REPLACE", ContentType="text/plain")),
        ("create-bucket", "create_bucket", dict(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "de01"})),
        ("delete-bucket", "delete_bucket", dict(Bucket="bkt")),
        ("head-bucket", "head_bucket", dict(Bucket="bkt")),
        ("get-bucket-location", "get_bucket_location", dict(Bucket="bkt")),
        ("get-bucket-versioning", "get_bucket_versioning", dict(Bucket="bkt")),
        ("list-buckets", "list_buckets", dict()),
        ("delete-object", "delete_object", dict(Bucket="bkt", Key="pfx/wal_005/00000002.history.lz4")),
        ("get-object-tagging", "get_object_tagging", dict(Bucket="bkt", Key="k")),
    ]
    for n, method, kwargs in calls:
        name = n
        try:
            getattr(client, method)(**kwargs)
        except Captured:
            pass
    presigned = []
    for n, method, params in [
        ("get-object", "get_object", dict(Bucket="bkt", Key="pfx/basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json")),
        ("put-object", "put_object", dict(Bucket="bkt", Key="upload/file.bin")),
        ("get-object-overrides", "get_object", dict(Bucket="bkt", Key="a b/c", ResponseContentType="text/plain", ResponseContentDisposition="attachment; filename=\"x y\"")),
        ("list-objects-v2", "list_objects_v2", dict(Bucket="bkt", Prefix="pfx/", Delimiter="/")),
    ]:
        url = client.generate_presigned_url(method, Params=params, ExpiresIn=3600)
        presigned.append((n, "PUT" if method.startswith("put") else "GET", url, [("host", HOST)], b""))
    return out, presigned


def walg_requests():
    """WAL-G's requests: header sets as captured on the wire, signed by botocore."""
    seg = "pfx/wal_005/000000010000000000000001.lz4"
    body = b"\x04\x22\x4d\x18" + bytes(range(60))
    md5 = "ahGohys2NDeZoVYXvqeM7w=="
    ua = "aws-sdk-go/1.55.8 (go1.22.5; linux; amd64)"
    reqs = [
        ("walg-put-segment", "PUT", f"/bkt/{seg}", [("Content-Length", str(len(body))), ("Content-Md5", md5), ("Expect", "100-continue"), ("X-Amz-Storage-Class", "STANDARD"), ("User-Agent", ua + " S3Manager")], body, "de01"),
        ("walg-put-history", "PUT", "/bkt/pfx/wal_005/00000002.history.lz4", [("Content-Length", "0"), ("Content-Md5", "1B2M2Y8AsgTpgAmY7PhCfg=="), ("X-Amz-Storage-Class", "STANDARD")], b"", "de01"),
        ("walg-get-sentinel", "GET", "/bkt/pfx/basebackups_005/base_000000010000000400000010_D_000000010000000000000002_backup_stop_sentinel.json", [("Accept-Encoding", "gzip"), ("User-Agent", ua)], b"", "de01"),
        ("walg-get-range", "GET", f"/bkt/{seg}", [("Range", "bytes=1048576-")], b"", "de01"),
        ("walg-head", "HEAD", "/bkt/pfx/basebackups_005/base_000000010000000000000002/metadata.json", [], b"", "de01"),
        ("walg-list-v2", "GET", "/bkt?continuation-token=tok1&delimiter=%2F&list-type=2&prefix=pfx%2Fwal_005%2F", [], b"", "de01"),
        ("walg-list-v1-probe", "GET", "/bkt?delimiter=%2F&max-keys=1&prefix=", [], b"", "de01"),
        ("walg-versioning", "GET", "/bkt?versioning=", [], b"", "us-east-1"),
        ("walg-location", "GET", "/bkt?location=", [], b"", "us-east-1"),
        ("walg-create-mpu", "POST", "/bkt/pfx/basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4?uploads=", [("X-Amz-Storage-Class", "STANDARD"), ("X-Amz-Server-Side-Encryption", "AES256")], b"", "de01"),
        ("walg-upload-part", "PUT", "/bkt/pfx/basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4?partNumber=3&uploadId=VXBsb2FkSWQ", [("Content-Length", str(len(body))), ("Content-Md5", md5)], body, "de01"),
        ("walg-complete-mpu", "POST", "/bkt/pfx/basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4?uploadId=VXBsb2FkSWQ", [("Content-Length", "100")], b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber><ETag>&#34;etag-part-1&#34;</ETag></Part></CompleteMultipartUpload>', "de01"),
        ("walg-abort-mpu", "DELETE", "/bkt/pfx/basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4?uploadId=VXBsb2FkSWQ", [], b"", "de01"),
        ("walg-delete-objects", "POST", "/bkt?delete=", [("Content-Md5", "iWQom5BaNhSOtv3l6PRNhQ==")], b"<Delete/>", "de01"),
        ("walg-copy", "PUT", "/bkt/pfx/basebackups_005/base_000000010000000000000003/tar_partitions/copy_0.tar.lz4", [("X-Amz-Copy-Source", "bkt/pfx/basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4")], b"", "de01"),
        ("walg-object-lock", "PUT", f"/bkt/{seg}", [("Content-Md5", md5), ("X-Amz-Storage-Class", "STANDARD"), ("X-Amz-Object-Lock-Mode", "GOVERNANCE"), ("X-Amz-Object-Lock-Retain-Until-Date", "2030-01-02T03:04:05.678Z")], body, "de01"),
        ("walg-trailing-dot-probe", "GET", "/bkt/pfx/wal_005/000000010000000000000001.", [], b"", "de01"),
    ]
    out = []
    for name, method, target, headers, body, region in reqs:
        url = f"http://{HOST}{target}"
        req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        S3SigV4Auth(Credentials(AKID, SECRET), "s3", region).add_auth(req)
        prepared = req.prepare()
        hs = [("host", HOST)] + [(k, v) for k, v in prepared.headers.items()]
        out.append((name, method, url, hs, body))
    return out


# Chunk signatures use the AWS documentation's key and date (as s3api/tests/fuzz.rs does);
# the seed signature of each body is on its first line.
DOC_SECRET, DOC_DATE, DOC_SCOPE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524T000000Z", "20130524/us-east-1/s3/aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


def doc_signing_key():
    k = _hmac(("AWS4" + DOC_SECRET).encode(), DOC_DATE[:8])
    for part in ("us-east-1", "s3", "aws4_request"):
        k = _hmac(k, part)
    return k


def signed_chunked(seed, payload, sizes, trailers=(), final_crlf=True, upper_hex=False):
    """aws-chunked with chunk signatures (and a signed trailer section if `trailers`)."""
    key, prev, out, rest, i = doc_signing_key(), seed, b"", payload, 0
    while True:
        n = min(sizes[i % len(sizes)], len(rest)) if rest else 0
        i += 1
        chunk, rest = rest[:n], rest[n:]
        sts = f"AWS4-HMAC-SHA256-PAYLOAD\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{EMPTY_SHA256}\n{hashlib.sha256(chunk).hexdigest()}"
        prev = _hmac(key, sts).hex()
        out += (f"{n:X}" if upper_hex else f"{n:x}").encode() + f";chunk-signature={prev}\r\n".encode()
        if n == 0:
            break
        out += chunk + b"\r\n"
    if trailers:
        out += b"".join(f"{k}:{v}\r\n".encode() for k, v in trailers)
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(trailers))
        sts = f"AWS4-HMAC-SHA256-TRAILER\n{DOC_DATE}\n{DOC_SCOPE}\n{prev}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        out += f"x-amz-trailer-signature:{_hmac(key, sts).hex()}\r\n".encode()
    return out + (b"\r\n" if final_crlf else b"")


def chunked_seeds():
    seed = lambda name: hashlib.sha256(name.encode()).hexdigest()
    # The AWS "chunked upload" example (PUT /examplebucket/chunkObject.txt), byte for byte.
    doc = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    write("chunked", "ok-aws-doc-example", f"signed {doc}\n".encode() + signed_chunked(doc, b"a" * 66560, [65536]))
    # The "trailing headers" example: same chunks, crc32c trailer, SDK-style trailer signature.
    doc_t = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    write("chunked", "ok-aws-doc-trailer", f"signed-trailer {doc_t}\n".encode()
          + signed_chunked(doc_t, b"a" * 66560, [65536], [("x-amz-checksum-crc32c", "sOO8/Q==")]))
    s = seed("small")
    write("chunked", "ok-signed-small", f"signed {s}\n".encode() + signed_chunked(s, b"hello, aws-chunked world", [5, 26, 1]))
    s = seed("upper")
    write("chunked", "ok-signed-upper-hex", f"signed {s}\n".encode() + signed_chunked(s, bytes(range(256)) * 2, [0x1a, 0xff], upper_hex=True))
    s = seed("trailers")
    write("chunked", "ok-signed-two-trailers", f"signed-trailer {s}\n".encode() + signed_chunked(
        s, b"0123456789" * 7, [64], [("x-amz-meta-b", "2"), ("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")]))
    s = seed("no-final-crlf")
    write("chunked", "ok-signed-trailer-no-final-crlf", f"signed-trailer {s}\n".encode() + signed_chunked(
        s, b"wal", [3], [("x-amz-checksum-sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")], final_crlf=False))
    s = seed("empty")
    write("chunked", "ok-signed-empty", f"signed {s}\n".encode() + signed_chunked(s, b"", [1]))
    # aws-sdk-js v3 ends an unsigned-trailer body after the final chunk, without trailers.
    write("chunked", "ok-unsigned-js-v3-lenient-end", b"unsigned-trailer\n5\r\nhello\r\n0\r\n")
    write("chunked", "ok-unsigned-extensions", b"unsigned\n5;foo=bar;chunk-signature=00\r\nhello\r\n0;x=1\r\n\r\n")
    write("chunked", "bad-size-overflow", b"unsigned\n10000000000000000\r\nx\r\n0\r\n\r\n")
    write("chunked", "bad-bare-lf", b"unsigned\n5\nhello\r\n0\r\n\r\n")


class StreamingAuth(S3SigV4Auth):
    """S3SigV4Auth with a streaming payload line, as SDKs that sign chunks send it."""

    def __init__(self, credentials, region, mode):
        super().__init__(credentials, "s3", region)
        self.mode = mode

    def payload(self, request):
        return self.mode


def more_requests():
    """Streaming (chunk-signed) header requests and presigned URLs boto3 does not make."""
    creds = Credentials(AKID, SECRET)
    header_form, presigned = [], []
    for name, mode, extra in [
        ("java-streaming-signed", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", []),
        ("streaming-signed-trailer", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", [("X-Amz-Trailer", "x-amz-checksum-crc32c")]),
    ]:
        headers = [("Content-Encoding", "aws-chunked"), ("X-Amz-Decoded-Content-Length", "66560"), ("Content-Length", "66824"), ("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")] + extra
        req = AWSRequest(method="PUT", url=f"http://{HOST}/bkt/big/chunkObject.txt", headers=dict(headers))
        StreamingAuth(creds, "de01", mode).add_auth(req)
        header_form.append((name, "PUT", req.url, [("host", HOST)] + list(req.prepare().headers.items()), b""))
    for name, method, target, headers, region, expires in [
        ("upload-part", "PUT", "/bkt/big/object?partNumber=7&uploadId=VXBsb2FkSWQ", [], "de01", 900),
        ("signed-meta-header", "PUT", "/bkt/upload/meta.bin", [("X-Amz-Meta-Owner", "db1"), ("Content-Type", "text/plain")], "de01", 604800),
        ("us-east-1", "GET", "/bkt/pfx/wal_005/00000002.history.lz4", [], "us-east-1", 60),
        ("head", "HEAD", "/bkt/pfx/basebackups_005/base_000000010000000000000002/metadata.json", [], "de01", 3600),
    ]:
        req = AWSRequest(method=method, url=f"http://{HOST}{target}", headers=dict(headers))
        S3SigV4QueryAuth(creds, "s3", region, expires=expires).add_auth(req)
        presigned.append((name, method, req.url, [("host", HOST)] + list(req.prepare().headers.items()), b""))
    return header_form, presigned


def main():
    chunked_seeds()
    write("sigv4_presigned", "bad-sigv2-query", f"GET /bkt/k?AWSAccessKeyId={AKID}&Expires=1795630364&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D\nhost: {HOST}\n".encode())
    streaming, presigned_more = more_requests()
    for name, method, url, headers, body in streaming:
        write("sigv4_header", f"ok-{name}", request_text(method, url, headers))
    for name, method, url, headers, body in presigned_more:
        write("sigv4_presigned", f"ok-botocore-{name}", request_text(method, url, headers))
    header_form, presigned = boto3_requests()
    walg = walg_requests()
    for name, method, url, headers, body in header_form + walg:
        text = request_text(method, url, headers)
        write("sigv4_header", f"ok-{name}", text)
        write("router", name, text)
        if any(k.lower() in ("range", "if-match", "if-none-match", "if-modified-since", "x-amz-copy-source-if-match", "content-md5", "x-amz-trailer") for k, _ in headers):
            write("headers", name, b"".join(f"{k.lower()}: {v}\n".encode() for k, v in headers))
        if name in ("complete-mpu", "delete-objects", "create-bucket"):
            write("xml", f"ok-boto3-{name}", body)
        if body.startswith(b"64\r\n") or b";chunk-signature=" in body or headers_has(headers, "content-encoding", "aws-chunked"):
            mode = "unsigned-trailer" if headers_has(headers, "x-amz-trailer") else "unsigned"
            write("chunked", f"ok-boto3-{name}", f"{mode}\n".encode() + body)
    for name, method, url, headers, body in presigned:
        text = request_text(method, url, headers)
        write("sigv4_presigned", f"ok-boto3-{name}", text)
        write("router", f"presigned-{name}", text)


def headers_has(headers, name, value=None):
    return any(k.lower() == name and (value is None or value in v) for k, v in headers)


if __name__ == "__main__":
    sys.exit(main())
