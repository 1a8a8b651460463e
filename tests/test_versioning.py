"""Versioning and Object Lock, checked with boto3 and the AWS CLI at their defaults.

- Versioning: PutBucketVersioning / GetBucketVersioning, versions and delete markers,
  GET/HEAD/DELETE/Copy by versionId, ListObjectVersions (order, IsLatest, prefix,
  delimiter, key/version markers), DeleteObjects with VersionId, the `null` version of a
  suspended bucket; versions survive a restart and `walstore check` counts them.
- Object Lock: a bucket created with Object Lock, default retention, per-object retention
  and legal hold on PUT, multipart and copy; the refusals S3 answers (a lock on a bucket
  without Object Lock, deleting a locked version, shortening COMPLIANCE, bypassing
  GOVERNANCE without an administrator key, suspending versioning of a locked bucket).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from harness import Walstore, walstore_exe

MiB = 1 << 20


def code(e: pytest.ExceptionInfo) -> tuple[int, str]:
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def versions(s3, bucket: str, prefix: str = "") -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is delete marker), in listing order, all pages."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        rows = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"]) for v in page.get("Versions", [])]
        rows += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"])
                 for m in page.get("DeleteMarkers", [])]
        # boto3 splits a page into two lists; S3 orders by key, then newest first.
        rows.sort(key=lambda r: (r[0], -r[4].timestamp()))
        out += [r[:4] for r in rows]
    return out


def future(seconds: int) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


def writer_client(server: Walstore, role: str = "writer"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    env.update(WALSTORE_ROOT_ACCESS_KEY=server.access_key, WALSTORE_ROOT_SECRET_KEY=server.secret_key)
    p = subprocess.run([walstore_exe(), "key", "create", "--role", role, "--json", "--endpoint", server.endpoint],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    key = json.loads(p.stdout)
    kw = server.boto3_kwargs()
    kw.update(aws_access_key_id=key["id"], aws_secret_access_key=key["secret"])
    return boto3.client("s3", **kw)


def test_versions_markers_and_version_ids(s3):
    s3.create_bucket(Bucket="ver")
    assert "Status" not in s3.get_bucket_versioning(Bucket="ver")
    s3.put_object(Bucket="ver", Key="before", Body=b"unversioned")
    s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="ver")["Status"] == "Enabled"

    ids = [s3.put_object(Bucket="ver", Key="k", Body=f"v{i}".encode())["VersionId"] for i in range(3)]
    assert len(set(ids)) == 3 and "null" not in ids
    assert s3.get_object(Bucket="ver", Key="k")["Body"].read() == b"v2"
    for i, v in enumerate(ids):
        r = s3.get_object(Bucket="ver", Key="k", VersionId=v)
        assert (r["Body"].read(), r["VersionId"]) == (f"v{i}".encode(), v)
        assert s3.head_object(Bucket="ver", Key="k", VersionId=v)["ContentLength"] == 2
    # The object written before versioning is the `null` version.
    assert s3.head_object(Bucket="ver", Key="before", VersionId="null")["ContentLength"] == len(b"unversioned")
    assert versions(s3, "ver") == [("before", "null", True, False)] + [
        ("k", v, v == ids[2], False) for v in reversed(ids)]

    # A delete without a version id adds a marker; the versions stay.
    d = s3.delete_object(Bucket="ver", Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ver", Key="k")
    assert code(e) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="ver", Key="k", VersionId=marker)
    assert code(e)[0] == 405
    assert s3.get_object(Bucket="ver", Key="k", VersionId=ids[1])["Body"].read() == b"v1"
    assert s3.list_objects_v2(Bucket="ver").get("KeyCount") == 1  # only `before`
    assert versions(s3, "ver", "k")[0] == ("k", marker, True, True)

    # Deleting the marker by id brings the newest version back.
    d = s3.delete_object(Bucket="ver", Key="k", VersionId=marker)
    assert d["DeleteMarker"] is True and d["VersionId"] == marker
    assert s3.get_object(Bucket="ver", Key="k")["Body"].read() == b"v2"
    # Deleting the current version for good makes the previous one current.
    s3.delete_object(Bucket="ver", Key="k", VersionId=ids[2])
    assert s3.get_object(Bucket="ver", Key="k")["Body"].read() == b"v1"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ver", Key="k", VersionId=ids[2])
    assert code(e) == (404, "NoSuchVersion")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ver", Key="k", VersionId="not-a-version")
    assert code(e) == (400, "InvalidArgument")

    # Copy from an older version.
    c = s3.copy_object(Bucket="ver", Key="copy", CopySource={"Bucket": "ver", "Key": "k", "VersionId": ids[0]})
    assert c["CopySourceVersionId"] == ids[0] and c["VersionId"]
    assert s3.get_object(Bucket="ver", Key="copy")["Body"].read() == b"v0"

    # DeleteObjects with version ids: every version of `k`, as WAL-G deletes.
    listed = [{"Key": k, "VersionId": v} for k, v, _, _ in versions(s3, "ver", "k")]
    r = s3.delete_objects(Bucket="ver", Delete={"Objects": listed})
    assert not r.get("Errors"), r
    assert sorted(d["VersionId"] for d in r["Deleted"]) == sorted(x["VersionId"] for x in listed)
    assert versions(s3, "ver", "k") == []
    # A bucket with versions left is not empty.
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="ver")
    assert code(e) == (409, "BucketNotEmpty")


def test_list_object_versions_pages_prefixes_and_markers(s3):
    s3.create_bucket(Bucket="pages")
    s3.put_bucket_versioning(Bucket="pages", VersioningConfiguration={"Status": "Enabled"})
    want = []
    for k in ["a/1", "a/2", "b", "c/x/1"]:
        vs = [s3.put_object(Bucket="pages", Key=k, Body=os.urandom(7))["VersionId"] for _ in range(3)]
        want += [(k, v) for v in reversed(vs)]
    # Pages of 2 walk through every version exactly once, in order.
    got, kw = [], {"Bucket": "pages", "MaxKeys": 2}
    for _ in range(20):
        r = s3.list_object_versions(**kw)
        got += [(v["Key"], v["VersionId"]) for v in r.get("Versions", [])]
        if not r["IsTruncated"]:
            break
        kw.update(KeyMarker=r["NextKeyMarker"], VersionIdMarker=r["NextVersionIdMarker"])
    assert got == want
    r = s3.list_object_versions(Bucket="pages", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert {v["Key"] for v in r["Versions"]} == {"b"}
    # Pages of 1 with a delimiter: each common prefix once, then the versions of `b`.
    seen, kw = [], {"Bucket": "pages", "MaxKeys": 1, "Delimiter": "/"}
    for _ in range(20):
        r = s3.list_object_versions(**kw)
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [v["VersionId"] for v in r.get("Versions", [])]
        if not r["IsTruncated"]:
            break
        kw.update(KeyMarker=r["NextKeyMarker"], VersionIdMarker=r.get("NextVersionIdMarker", ""))
    assert seen == ["a/"] + [v for k, v in want if k == "b"] + ["c/"], seen
    r = s3.list_object_versions(Bucket="pages", Prefix="a/", KeyMarker="a/1")
    assert {v["Key"] for v in r["Versions"]} == {"a/2"}
    with pytest.raises(ClientError) as e:
        s3.list_object_versions(Bucket="pages", VersionIdMarker=want[0][1])
    assert code(e) == (400, "InvalidArgument")


def test_suspended_bucket_replaces_the_null_version(s3):
    s3.create_bucket(Bucket="susp")
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket="susp", Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="susp")["Status"] == "Suspended"
    assert s3.put_object(Bucket="susp", Key="k", Body=b"n1")["VersionId"] == "null"
    assert s3.put_object(Bucket="susp", Key="k", Body=b"n2")["VersionId"] == "null"
    assert versions(s3, "susp") == [("k", "null", True, False), ("k", kept, False, False)]
    assert s3.delete_object(Bucket="susp", Key="k")["VersionId"] == "null"
    assert versions(s3, "susp") == [("k", "null", True, True), ("k", kept, False, False)]
    assert s3.get_object(Bucket="susp", Key="k", VersionId=kept)["Body"].read() == b"kept"


def test_lock_headers_are_refused_where_they_cannot_be_honoured(s3):
    s3.create_bucket(Bucket="plain")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="plain", Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=future(3600))
    assert code(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket="plain", Key="k", ObjectLockLegalHoldStatus="ON")
    assert code(e) == (400, "InvalidRequest")
    assert s3.list_objects_v2(Bucket="plain")["KeyCount"] == 0
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(Bucket="plain", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert code(e) == (409, "InvalidBucketState")
    with pytest.raises(ClientError) as e:
        s3.get_object_lock_configuration(Bucket="plain")
    assert code(e) == (404, "ObjectLockConfigurationNotFoundError")
    s3.put_object(Bucket="plain", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.put_object_retention(Bucket="plain", Key="k",
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(60)})
    assert code(e) == (400, "InvalidRequest")


def test_object_lock_compliance_governance_and_legal_hold(server, s3):
    s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    assert s3.get_bucket_versioning(Bucket="locked")["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket="locked")["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket="locked", VersioningConfiguration={"Status": "Suspended"})
    assert code(e) == (409, "InvalidBucketState")

    until = future(3600).replace(microsecond=0)
    v = s3.put_object(Bucket="locked", Key="c", Body=b"c", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=until)["VersionId"]
    r = s3.get_object_retention(Bucket="locked", Key="c")["Retention"]
    assert r["Mode"] == "COMPLIANCE" and r["RetainUntilDate"] == until
    h = s3.head_object(Bucket="locked", Key="c")
    assert h["ObjectLockMode"] == "COMPLIANCE" and h["ObjectLockRetainUntilDate"] == until
    # Nobody deletes it for good, administrators included, bypass or not.
    for bypass in (False, True):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket="locked", Key="c", VersionId=v, BypassGovernanceRetention=bypass)
        assert code(e) == (403, "AccessDenied")
    r = s3.delete_objects(Bucket="locked", Delete={"Objects": [{"Key": "c", "VersionId": v}]})
    assert [x["Code"] for x in r["Errors"]] == ["AccessDenied"]
    # Shortening or weakening COMPLIANCE is refused; extending is allowed.
    for ret in ({"Mode": "COMPLIANCE", "RetainUntilDate": future(60)},
                {"Mode": "GOVERNANCE", "RetainUntilDate": future(7200)}):
        with pytest.raises(ClientError) as e:
            s3.put_object_retention(Bucket="locked", Key="c", Retention=ret, BypassGovernanceRetention=True)
        assert code(e) == (403, "AccessDenied")
    s3.put_object_retention(Bucket="locked", Key="c", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": future(7200)})
    # A delete without a version id only hides it behind a marker.
    assert s3.delete_object(Bucket="locked", Key="c")["DeleteMarker"] is True
    assert s3.get_object(Bucket="locked", Key="c", VersionId=v)["Body"].read() == b"c"

    # GOVERNANCE: an administrator may bypass it, a writer key may not.
    g = s3.put_object(Bucket="locked", Key="g", Body=b"g", ObjectLockMode="GOVERNANCE",
                      ObjectLockRetainUntilDate=future(3600))["VersionId"]
    writer = writer_client(server)
    with pytest.raises(ClientError) as e:
        writer.delete_object(Bucket="locked", Key="g", VersionId=g, BypassGovernanceRetention=True)
    assert code(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="locked", Key="g", VersionId=g)
    assert code(e) == (403, "AccessDenied")
    s3.delete_object(Bucket="locked", Key="g", VersionId=g, BypassGovernanceRetention=True)
    assert versions(s3, "locked", "g") == []

    # Legal hold: placed by a writer, lifted only by an administrator.
    h = s3.put_object(Bucket="locked", Key="h", Body=b"h")["VersionId"]
    writer.put_object_legal_hold(Bucket="locked", Key="h", LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket="locked", Key="h")["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="locked", Key="h", VersionId=h, BypassGovernanceRetention=True)
    assert code(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        writer.put_object_legal_hold(Bucket="locked", Key="h", LegalHold={"Status": "OFF"})
    assert code(e) == (403, "AccessDenied")
    s3.put_object_legal_hold(Bucket="locked", Key="h", LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket="locked", Key="h", VersionId=h)
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket="locked", Key="c", VersionId="null")
    assert code(e)[0] == 404


def test_default_retention_multipart_copy_and_expiry(server, s3):
    s3.create_bucket(Bucket="dflt", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="dflt", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    cfg = s3.get_object_lock_configuration(Bucket="dflt")["ObjectLockConfiguration"]
    assert cfg["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 1}
    s3.put_object(Bucket="dflt", Key="d", Body=b"d")
    r = s3.get_object_retention(Bucket="dflt", Key="d")["Retention"]
    left = (r["RetainUntilDate"] - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert r["Mode"] == "GOVERNANCE" and 86_000 < left <= 86_400

    # A multipart upload gets the lock asked for at its creation.
    until = future(3600).replace(microsecond=0)
    up = s3.create_multipart_upload(Bucket="dflt", Key="mp", ObjectLockMode="COMPLIANCE",
                                    ObjectLockRetainUntilDate=until)["UploadId"]
    parts = []
    for n, body in enumerate([os.urandom(5 * MiB), b"tail"], start=1):
        etag = s3.upload_part(Bucket="dflt", Key="mp", UploadId=up, PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    done = s3.complete_multipart_upload(Bucket="dflt", Key="mp", UploadId=up, MultipartUpload={"Parts": parts})
    assert done["VersionId"]
    assert s3.get_object_retention(Bucket="dflt", Key="mp")["Retention"] == {"Mode": "COMPLIANCE",
                                                                            "RetainUntilDate": until}
    # A copy gets its own lock (the headers, else the default), not the source's.
    s3.copy_object(Bucket="dflt", Key="cp", CopySource={"Bucket": "dflt", "Key": "mp"}, ObjectLockLegalHoldStatus="ON")
    assert s3.get_object_legal_hold(Bucket="dflt", Key="cp")["LegalHold"]["Status"] == "ON"
    assert s3.get_object_retention(Bucket="dflt", Key="cp")["Retention"]["Mode"] == "GOVERNANCE"

    # A retention that expired no longer protects.
    short = s3.put_object(Bucket="dflt", Key="s", Body=b"s", ObjectLockMode="COMPLIANCE",
                          ObjectLockRetainUntilDate=future(2))["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="dflt", Key="s", VersionId=short)
    assert code(e) == (403, "AccessDenied")
    time.sleep(3)
    s3.delete_object(Bucket="dflt", Key="s", VersionId=short)


def test_versions_survive_a_restart_and_check_counts_them(tmp_path):
    s = Walstore(data_dir=tmp_path / "data", buckets=[]).start()
    try:
        c = boto3.client("s3", **s.boto3_kwargs())
        c.create_bucket(Bucket="keep", ObjectLockEnabledForBucket=True)
        ids = [c.put_object(Bucket="keep", Key="k", Body=f"{i}".encode(), ObjectLockMode="COMPLIANCE",
                            ObjectLockRetainUntilDate=future(3600))["VersionId"] for i in range(3)]
        c.delete_object(Bucket="keep", Key="k")
        before = versions(c, "keep")
    finally:
        assert s.stop() == 0, s.log_path
    p = subprocess.run([walstore_exe(), "check", "--data-dir", str(tmp_path / "data"), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["problems"] == [] and report["versions"] == 4, report
    s = Walstore(data_dir=tmp_path / "data", buckets=[]).start()
    try:
        c = boto3.client("s3", **s.boto3_kwargs())
        assert versions(c, "keep") == before
        assert c.get_object_retention(Bucket="keep", Key="k", VersionId=ids[0])["Retention"]["Mode"] == "COMPLIANCE"
        with pytest.raises(ClientError) as e:
            c.delete_object(Bucket="keep", Key="k", VersionId=ids[0])
        assert code(e) == (403, "AccessDenied")
    finally:
        assert s.stop() == 0, s.log_path


def test_aws_cli_versioning_and_retention(server, s3):
    env = dict(os.environ, **server.env())
    def cli(*args: str) -> dict:
        p = subprocess.run(["aws", "s3api", *args, "--output", "json"], capture_output=True, text=True, timeout=120,
                           env=env)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else {}
    cli("create-bucket", "--bucket", "cli", "--object-lock-enabled-for-bucket")
    assert cli("get-bucket-versioning", "--bucket", "cli")["Status"] == "Enabled"
    until = future(3600).strftime("%Y-%m-%dT%H:%M:%SZ")
    put = cli("put-object", "--bucket", "cli", "--key", "k", "--object-lock-mode", "COMPLIANCE",
              "--object-lock-retain-until-date", until)
    assert cli("get-object-retention", "--bucket", "cli", "--key", "k")["Retention"]["Mode"] == "COMPLIANCE"
    listed = cli("list-object-versions", "--bucket", "cli")
    assert [v["VersionId"] for v in listed["Versions"]] == [put["VersionId"]]


def test_asof_view_shows_the_bucket_as_it_stood(server, s3):
    s3.create_bucket(Bucket="hist")
    s3.put_bucket_versioning(Bucket="hist", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="hist", Key="repo/a", Body=b"a-old")
    s3.put_object(Bucket="hist", Key="repo/b", Body=b"b")
    s3.put_object(Bucket="hist", Key="repo/sub/c", Body=b"c")
    time.sleep(1.1)
    at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(1.1)
    # The "attack": overwrite one, delete one, add one.
    s3.put_object(Bucket="hist", Key="repo/a", Body=b"garbage")
    s3.delete_object(Bucket="hist", Key="repo/b")
    s3.put_object(Bucket="hist", Key="repo/new", Body=b"new")

    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    env.update(WALSTORE_ROOT_ACCESS_KEY=server.access_key, WALSTORE_ROOT_SECRET_KEY=server.secret_key)
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([walstore_exe(), *args, "--endpoint", server.endpoint], capture_output=True,
                              text=True, timeout=60, env=env)
    p = cli("asof", "create", "hist/repo/", "--at", at, "--ttl", "1h", "--json")
    assert p.returncode == 0, p.stderr
    view = json.loads(p.stdout)["name"]
    assert s3.get_object(Bucket=view, Key="repo/a")["Body"].read() == b"a-old"
    assert s3.get_object(Bucket=view, Key="repo/b")["Body"].read() == b"b"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=view, Key="repo/new")
    assert code(e) == (404, "NoSuchKey")
    listed = s3.list_objects_v2(Bucket=view, Prefix="repo/")
    assert [o["Key"] for o in listed["Contents"]] == ["repo/a", "repo/b", "repo/sub/c"]
    listed = s3.list_objects_v2(Bucket=view, Prefix="repo/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["repo/a", "repo/b"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["repo/sub/"]
    pages = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=view, PaginationConfig={"PageSize": 1})
             for o in page.get("Contents", [])]
    assert pages == ["repo/a", "repo/b", "repo/sub/c"]
    s3.head_bucket(Bucket=view)
    assert "Status" not in s3.get_bucket_versioning(Bucket=view)
    # Read-only, for administrators too; and the source is unchanged by it.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=view, Key="repo/a", Body=b"x")
    assert code(e) == (403, "AccessDenied")
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=view, Key="repo/a")
    assert code(e) == (403, "AccessDenied")
    assert s3.get_object(Bucket="hist", Key="repo/a")["Body"].read() == b"garbage"
    # Listed, then dropped: the name stops answering.
    p = cli("asof", "list", "--json")
    assert p.returncode == 0 and view in p.stdout, p.stderr
    assert cli("asof", "drop", view).returncode == 0
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=view)
    assert code(e)[0] == 404
    # A time in the future or a bad one is refused in one line.
    p = cli("asof", "create", "hist", "--at", "yesterday")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "ISO 8601" in p.stderr, p.stderr


def test_lock_and_versions_cli(server, s3):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSTORE_")}
    env.update(WALSTORE_ROOT_ACCESS_KEY=server.access_key, WALSTORE_ROOT_SECRET_KEY=server.secret_key)
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([walstore_exe(), *args, "--endpoint", server.endpoint], capture_output=True,
                              text=True, timeout=60, env=env)
    p = cli("bucket", "create", "vault", "--object-lock")
    assert p.returncode == 0, p.stderr
    p = cli("lock", "set", "vault", "--mode", "COMPLIANCE", "--days", "7", "--json")
    assert p.returncode == 0, p.stderr
    assert s3.get_object_lock_configuration(Bucket="vault")["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == \
        {"Mode": "COMPLIANCE", "Days": 7}
    v = s3.put_object(Bucket="vault", Key="wal/1", Body=b"1")["VersionId"]
    s3.delete_object(Bucket="vault", Key="wal/1")
    shown = json.loads(cli("lock", "show", "vault", "--json").stdout)
    assert shown["object_lock"] is True and shown["default_retention"] == {"mode": "COMPLIANCE", "days": 7}
    assert shown["locked_versions_all_buckets"] >= 1
    rows = json.loads(cli("versions", "ls", "vault/wal/", "--json").stdout)["versions"]
    assert [(r["version_id"], r["delete_marker"]) for r in rows][1] == (v, False) and rows[0]["delete_marker"]
    p = cli("versions", "ls", "vault")
    assert p.returncode == 0 and v in p.stdout
    # Object Lock on a bucket without versioning is refused with S3's reason.
    s3.create_bucket(Bucket="plainb")
    p = cli("lock", "set", "plainb")
    assert p.returncode == 1 and "Versioning must be 'Enabled'" in p.stderr, p.stderr
