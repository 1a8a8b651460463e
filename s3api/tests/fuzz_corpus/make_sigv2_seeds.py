#!/usr/bin/env python3
"""Writes the `sigv2` seeds of the fuzz corpus: requests signed by botocore's Signature
Version 2 signers (HmacV1Auth for the header form, HmacV1QueryAuth for presigned URLs),
so the signatures come from an implementation other than walstore's.

The clock is frozen at 2026-11-25T17:12:44Z (presigned URLs expire an hour later);
s3api/tests/fuzz.rs verifies at that time with the same key pair. Run it with the test
venv (boto3 installed):
    $WALSTORE_VENV/bin/python s3api/tests/fuzz_corpus/make_sigv2_seeds.py
"""
import os

import botocore.auth
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

DATE = "Wed, 25 Nov 2026 17:12:44 GMT"
EXPIRES = 1795626764 + 3600
HmacV1Auth._get_date = lambda self: DATE
HmacV1QueryAuth._get_date = lambda self: str(EXPIRES)
AKID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:9000"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sigv2")
CREDS = Credentials(AKID, SECRET)

# (name, method, path and query, headers, body)
REQUESTS = [
    ("get-object", "GET", "/bkt/spilo/c1/wal_005/000000010000000000000005.lz4", {}, b""),
    ("put-object-meta", "PUT", "/bkt/dir/key%20with%20space", {"Content-Type": "application/octet-stream",
     "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==", "x-amz-meta-owner": "db1", "x-amz-acl": "private"}, b""),
    ("list-v2", "GET", "/bkt?list-type=2&prefix=spilo%2F&delimiter=%2F", {}, b""),
    ("list-buckets", "GET", "/", {}, b""),
    ("delete-objects", "POST", "/bkt?delete", {"Content-MD5": "ZQwGS0Wd7Ag3ABqeLJQQ9Q==",
     "Content-Type": "application/xml"}, b"<Delete><Object><Key>k</Key></Object></Delete>"),
    ("create-upload", "POST", "/bkt/big?uploads", {}, b""),
    ("upload-part", "PUT", "/bkt/big?partNumber=2&uploadId=2~abcDEF", {}, b"part"),
    ("head-version", "HEAD", "/bkt/k?versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY", {}, b""),
    ("get-response-override", "GET", "/bkt/k?response-content-type=text%2Fplain&response-cache-control=no-cache", {}, b""),
    ("x-amz-date", "DELETE", "/bkt/dir/k", {"x-amz-date": DATE}, b""),
]


def write(name, method, url, headers):
    os.makedirs(OUT, exist_ok=True)
    target = url.split(HOST, 1)[1] or "/"
    lines = [f"{method} {target}"] + [f"{k.lower()}: {v}" for k, v in headers.items()]
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(("\n".join(lines) + "\n").encode())


def main():
    for name, method, pq, headers, body in REQUESTS:
        req = AWSRequest(method=method, url=f"http://{HOST}{pq}", headers=dict(headers), data=body)
        req.headers["host"] = HOST
        HmacV1Auth(CREDS).add_auth(req)
        write(f"ok-header-{name}", method, req.url, dict(req.headers.items()))
        if name == "x-amz-date":
            continue
        q = AWSRequest(method=method, url=f"http://{HOST}{pq}", headers=dict(headers), data=body)
        HmacV1QueryAuth(CREDS, expires=3600).add_auth(q)
        # What stays a header of a presigned request (botocore moves x-amz-*, Content-MD5 and
        # Content-Type into the query).
        kept = {k: v for k, v in q.headers.items() if k.lower() not in ("date",) and not k.lower().startswith("x-amz-")
                and k.lower() not in ("content-md5", "content-type")}
        kept["host"] = HOST
        write(f"ok-query-{name}", method, q.url, kept)
    # Refusals the fuzzer starts from.
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "bad-expired"), "wb") as f:
        f.write(f"GET /bkt/k?AWSAccessKeyId={AKID}&Expires=1795626000&Signature=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D\nhost: {HOST}\n".encode())
    with open(os.path.join(OUT, "bad-no-colon"), "wb") as f:
        f.write(f"GET /bkt/k\nhost: {HOST}\ndate: {DATE}\nauthorization: AWS {AKID}\n".encode())


if __name__ == "__main__":
    main()
