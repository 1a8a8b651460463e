//! Every supported operation through the official AWS SDK for Rust, against
//! the real binary on 127.0.0.1:0.

mod common;

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective,
    ObjectIdentifier,
};
use common::{bytes_of, raw_http, Server};

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_owned()
}

/// DeleteObjects of `ids` in bucket `b` (one request).
async fn delete_ids(
    c: &aws_sdk_s3::Client,
    b: &str,
    ids: Vec<ObjectIdentifier>,
) -> aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput {
    let delete = Delete::builder().set_objects(Some(ids)).build().expect("delete");
    c.delete_objects().bucket(b).delete(delete).send().await.expect("delete objects")
}

async fn get_bytes(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Vec<u8> {
    let o = c.get_object().bucket(b).key(k).send().await.expect("get");
    o.body.collect().await.expect("body").into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &[]);
    let c = srv.client();
    c.create_bucket().bucket("alpha").send().await.expect("create");
    c.create_bucket().bucket("beta").send().await.expect("create");
    let e = c.create_bucket().bucket("alpha").send().await.expect_err("exists");
    assert_eq!(code(&e.into_service_error()), "BucketAlreadyOwnedByYou");
    let names: Vec<String> = c
        .list_buckets()
        .send()
        .await
        .expect("list")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    c.head_bucket().bucket("alpha").send().await.expect("head");
    let e = c.head_bucket().bucket("missing").send().await.expect_err("missing");
    assert!(e.into_service_error().is_not_found());
    let loc = c.get_bucket_location().bucket("alpha").send().await.expect("location");
    assert_eq!(loc.location_constraint().map(|l| l.as_str()), Some("de01"));
    let v = c.get_bucket_versioning().bucket("alpha").send().await.expect("versioning");
    assert!(v.status().is_none(), "unversioned buckets have no Status");
    c.put_object().bucket("alpha").key("k").body(ByteStream::from_static(b"x")).send().await.expect("put");
    let e = c.delete_bucket().bucket("alpha").send().await.expect_err("not empty");
    assert_eq!(code(&e.into_service_error()), "BucketNotEmpty");
    c.delete_object().bucket("alpha").key("k").send().await.expect("delete");
    c.delete_bucket().bucket("alpha").send().await.expect("delete bucket");
    let e = c.create_bucket().bucket("Not_Valid").send().await.expect_err("invalid");
    assert_eq!(code(&e.into_service_error()), "InvalidBucketName");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_metadata_and_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let data = bytes_of(1, 3 * 1024 * 1024 + 17);
    let put = c
        .put_object()
        .bucket("bkt")
        .key("dir/obj.bin")
        .content_type("application/x-test")
        .metadata("owner", "db1")
        .cache_control("no-cache")
        .storage_class(aws_sdk_s3::types::StorageClass::Standard)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put");
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(&data))
    };
    assert_eq!(put.e_tag(), Some(format!("\"{md5}\"").as_str()));
    let h = c.head_object().bucket("bkt").key("dir/obj.bin").send().await.expect("head");
    assert_eq!(h.content_length(), Some(data.len() as i64), "HEAD carries the real length");
    assert_eq!(h.content_type(), Some("application/x-test"));
    assert_eq!(h.cache_control(), Some("no-cache"));
    assert_eq!(h.metadata().and_then(|m| m.get("owner")).map(String::as_str), Some("db1"));
    assert!(h.last_modified().is_some());
    assert_eq!(get_bytes(&c, "bkt", "dir/obj.bin").await, data);

    // Keys are opaque: dot segments, trailing dot, spaces and unicode round-trip.
    for key in ["a/../b", "wal_005/000000010000000000000001.", "sp ace+plus", "ünï/cødé", "x//y"] {
        c.put_object().bucket("bkt").key(key).body(ByteStream::from(key.as_bytes().to_vec())).send().await.expect(key);
        assert_eq!(get_bytes(&c, "bkt", key).await, key.as_bytes(), "{key}");
    }

    let e = c.get_object().bucket("bkt").key("missing").send().await.expect_err("missing");
    assert!(e.into_service_error().is_no_such_key());
    let e = c.head_object().bucket("bkt").key("missing").send().await.expect_err("missing");
    assert!(e.into_service_error().is_not_found());
    let e = c.get_object().bucket("nope").key("k").send().await.expect_err("no bucket");
    assert_eq!(code(&e.into_service_error()), "NoSuchBucket");
    let long = "k".repeat(1025);
    let e = c.put_object().bucket("bkt").key(&long).body(ByteStream::from_static(b"x")).send().await.expect_err("long");
    assert_eq!(code(&e.into_service_error()), "KeyTooLongError");

    c.delete_object().bucket("bkt").key("dir/obj.bin").send().await.expect("delete");
    c.delete_object().bucket("bkt").key("dir/obj.bin").send().await.expect("deleting a missing key succeeds");
    let e = c.head_object().bucket("bkt").key("dir/obj.bin").send().await.expect_err("gone");
    assert!(e.into_service_error().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_three_parts() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let parts = [bytes_of(10, 5 << 20), bytes_of(11, 5 << 20), bytes_of(12, 1234)];
    let up = c.create_multipart_upload().bucket("bkt").key("mp").send().await.expect("create");
    let id = up.upload_id().expect("upload id").to_owned();
    let listed = c.list_multipart_uploads().bucket("bkt").send().await.expect("uploads");
    assert_eq!(listed.uploads().len(), 1);
    let mut done = Vec::new();
    // Upload out of order, like s3manager does.
    for n in [3i32, 1, 2] {
        let r = c
            .upload_part()
            .bucket("bkt")
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(parts[(n - 1) as usize].clone()))
            .send()
            .await
            .expect("part");
        done.push(CompletedPart::builder().part_number(n).e_tag(r.e_tag().expect("etag")).build());
    }
    done.sort_by_key(|p| p.part_number());
    let lp = c.list_parts().bucket("bkt").key("mp").upload_id(&id).send().await.expect("list parts");
    assert_eq!(lp.parts().iter().map(|p| p.part_number().unwrap_or(0)).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Wrong order is refused.
    let mut wrong = done.clone();
    wrong.swap(0, 1);
    let e = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(wrong)).build())
        .send()
        .await
        .expect_err("order");
    assert_eq!(code(&e.into_service_error()), "InvalidPartOrder");
    let r = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .expect("complete");
    assert!(r.e_tag().expect("etag").ends_with("-3\""));
    let got = get_bytes(&c, "bkt", "mp").await;
    assert_eq!(got.len(), parts.iter().map(Vec::len).sum::<usize>());
    assert_eq!(got, parts.concat());
    let e = c.list_parts().bucket("bkt").key("mp").upload_id(&id).send().await.expect_err("gone");
    assert_eq!(code(&e.into_service_error()), "NoSuchUpload");

    // Abort.
    let up = c.create_multipart_upload().bucket("bkt").key("ab").send().await.expect("create");
    let id = up.upload_id().expect("id").to_owned();
    c.upload_part()
        .bucket("bkt")
        .key("ab")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"p"))
        .send()
        .await
        .expect("part");
    c.abort_multipart_upload().bucket("bkt").key("ab").upload_id(&id).send().await.expect("abort");
    let e = c.abort_multipart_upload().bucket("bkt").key("ab").upload_id(&id).send().await.expect_err("twice");
    assert_eq!(code(&e.into_service_error()), "NoSuchUpload");
    // A part below 5 MiB that is not the last is refused at completion.
    let up = c.create_multipart_upload().bucket("bkt").key("small").send().await.expect("create");
    let id = up.upload_id().expect("id").to_owned();
    let mut ps = Vec::new();
    for n in 1..=2 {
        let r = c
            .upload_part()
            .bucket("bkt")
            .key("small")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .expect("part");
        ps.push(CompletedPart::builder().part_number(n).e_tag(r.e_tag().expect("etag")).build());
    }
    let e = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("small")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(ps)).build())
        .send()
        .await
        .expect_err("too small");
    assert_eq!(code(&e.into_service_error()), "EntityTooSmall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_2500_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let mut expected = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2500u32 {
        // 25 "directories" of 100 keys, like wal_005/ and basebackups_005/.
        let key = format!("d{:02}/seg{:05}", i % 25, i);
        expected.push(key.clone());
        let c = c.clone();
        tasks.spawn(async move {
            c.put_object()
                .bucket("bkt")
                .key(&key)
                .body(ByteStream::from(key.clone().into_bytes()))
                .send()
                .await
                .map(|_| ())
        });
        if tasks.len() >= 32 {
            tasks.join_next().await.expect("task").expect("join").expect("put");
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("join").expect("put");
    }
    expected.sort();

    // V2 without delimiter, 1000 per page, paginated.
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut p = c.list_objects_v2().bucket("bkt").into_paginator().send();
    while let Some(page) = p.next().await {
        let page = page.expect("page");
        pages += 1;
        assert_eq!(page.key_count(), Some(page.contents().len() as i32));
        assert_eq!(page.is_truncated(), Some(page.next_continuation_token().is_some()));
        keys.extend(page.contents().iter().map(|o| o.key().expect("key").to_owned()));
    }
    assert_eq!(pages, 3);
    assert_eq!(keys, expected);

    // With delimiter: 25 common prefixes.
    let r = c.list_objects_v2().bucket("bkt").delimiter("/").send().await.expect("list");
    assert_eq!(r.common_prefixes().len(), 25);
    assert!(r.contents().is_empty());
    // With delimiter and small pages, through the prefixes.
    let mut prefixes = Vec::new();
    let mut p = c.list_objects_v2().bucket("bkt").delimiter("/").max_keys(7).into_paginator().send();
    while let Some(page) = p.next().await {
        prefixes.extend(page.expect("page").common_prefixes().iter().map(|p| p.prefix().expect("prefix").to_owned()));
    }
    assert_eq!(prefixes.len(), 25);
    // Prefix + delimiter inside one directory, paged by 30.
    let mut n = 0;
    let mut p = c.list_objects_v2().bucket("bkt").prefix("d07/").delimiter("/").max_keys(30).into_paginator().send();
    while let Some(page) = p.next().await {
        n += page.expect("page").contents().len();
    }
    assert_eq!(n, 100);
    // start-after.
    let r = c.list_objects_v2().bucket("bkt").start_after(&expected[2497]).send().await.expect("list");
    assert_eq!(r.contents().len(), 2);

    // V1 with markers.
    let mut keys = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut req = c.list_objects().bucket("bkt").max_keys(900);
        if let Some(m) = &marker {
            req = req.marker(m);
        }
        let page = req.send().await.expect("v1");
        keys.extend(page.contents().iter().map(|o| o.key().expect("key").to_owned()));
        if page.is_truncated() != Some(true) {
            break;
        }
        marker = page.next_marker().map(str::to_owned).or_else(|| keys.last().cloned());
    }
    assert_eq!(keys, expected);

    // ListObjectVersions answers as an unversioned bucket.
    let v = c.list_object_versions().bucket("bkt").prefix("d00/").send().await.expect("versions");
    assert_eq!(v.versions().len(), 100);
    assert!(v.versions().iter().all(|v| v.version_id() == Some("null") && v.is_latest() == Some(true)));

    // encoding-type=url with a key that needs it.
    c.put_object().bucket("bkt").key("z/a b+c").body(ByteStream::from_static(b"x")).send().await.expect("put");
    let r = c.list_objects_v2().bucket("bkt").prefix("z/").send().await.expect("list");
    assert_eq!(r.contents()[0].key(), Some("z/a b+c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditionals() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let data = bytes_of(5, 2_500_000);
    let etag = c
        .put_object()
        .bucket("bkt")
        .key("r")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put")
        .e_tag()
        .expect("etag")
        .to_owned();
    for (range, want) in [
        ("bytes=0-9", &data[0..10]),
        ("bytes=1048570-1048590", &data[1_048_570..1_048_591]),
        ("bytes=2499990-", &data[2_499_990..]),
        ("bytes=-5", &data[data.len() - 5..]),
    ] {
        let o = c.get_object().bucket("bkt").key("r").range(range).send().await.expect(range);
        assert_eq!(o.content_length(), Some(want.len() as i64), "{range}");
        assert!(o.content_range().is_some());
        assert_eq!(o.body.collect().await.expect("body").into_bytes().as_ref(), want, "{range}");
    }
    let e = c.get_object().bucket("bkt").key("r").range("bytes=2500000-").send().await.expect_err("416");
    assert_eq!(code(&e.into_service_error()), "InvalidRange");

    c.get_object().bucket("bkt").key("r").if_match(&etag).send().await.expect("if-match");
    let e = c.get_object().bucket("bkt").key("r").if_match("\"nope\"").send().await.expect_err("412");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    let e = c.get_object().bucket("bkt").key("r").if_none_match(&etag).send().await.expect_err("304");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));
    let past = aws_sdk_s3::primitives::DateTime::from_secs(1_000_000_000);
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_000_000_000);
    c.get_object().bucket("bkt").key("r").if_modified_since(past).send().await.expect("modified since");
    let e = c.get_object().bucket("bkt").key("r").if_modified_since(future).send().await.expect_err("304");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(304));
    let e = c.get_object().bucket("bkt").key("r").if_unmodified_since(past).send().await.expect_err("412");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));

    // Conditional PUT.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("r")
        .if_none_match("*")
        .body(ByteStream::from_static(b"no"))
        .send()
        .await
        .expect_err("exists");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(412));
    c.put_object()
        .bucket("bkt")
        .key("new")
        .if_none_match("*")
        .body(ByteStream::from_static(b"yes"))
        .send()
        .await
        .expect("absent");
    c.put_object()
        .bucket("bkt")
        .key("r")
        .if_match(&etag)
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .expect("if-match put");
    assert_eq!(get_bytes(&c, "bkt", "r").await, b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_and_put() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).expect("cfg");
    let put = c.put_object().bucket("bkt").key("pre signed").presigned(cfg.clone()).await.expect("presign put");
    let uri: http::Uri = put.uri().parse().expect("uri");
    let body = b"presigned body";
    let req = format!(
        "PUT {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        uri.path_and_query().expect("pq"),
        srv.port,
        body.len()
    );
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    let (status, _, resp) = raw_http(srv.port, &raw);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));

    let get = c.get_object().bucket("bkt").key("pre signed").presigned(cfg).await.expect("presign get");
    let uri: http::Uri = get.uri().parse().expect("uri");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        uri.path_and_query().expect("pq"),
        srv.port
    );
    let (status, _, resp) = raw_http(srv.port, req.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(resp, body);

    // A tampered signature is refused.
    let tampered = uri.path_and_query().expect("pq").as_str().replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let req = format!("GET {tampered} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", srv.port);
    let (status, _, resp) = raw_http(srv.port, req.as_bytes());
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&resp));

    // An expired one too.
    let short = PresigningConfig::expires_in(Duration::from_secs(1)).expect("cfg");
    let get = c.get_object().bucket("bkt").key("pre signed").presigned(short).await.expect("presign");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let uri: http::Uri = get.uri().parse().expect("uri");
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        uri.path_and_query().expect("pq"),
        srv.port
    );
    let (status, _, resp) = raw_http(srv.port, req.as_bytes());
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&resp).contains("<Code>AccessDenied</Code>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_and_gc() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(
        dir.path(),
        &["--bucket", "bkt", "--bucket", "ckt", "--gc-grace", "0s", "--gc-interval", "200ms"],
    );
    let cl = srv.client();
    let data = bytes_of(77, 1 << 20);
    cl.put_object().bucket("bkt").key("one").body(ByteStream::from(data.clone())).send().await.expect("put");
    cl.put_object().bucket("ckt").key("two").body(ByteStream::from(data.clone())).send().await.expect("put");
    assert_eq!(srv.blob_files(), 1, "the same bytes under two keys are one blob on disk");
    cl.copy_object().bucket("bkt").key("three").copy_source("bkt/one").send().await.expect("copy");
    assert_eq!(srv.blob_files(), 1, "copies share the blob");
    for (b, k) in [("bkt", "one"), ("ckt", "two")] {
        cl.delete_object().bucket(b).key(k).send().await.expect("delete");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(srv.blob_files(), 1, "still referenced by the copy");
    assert_eq!(get_bytes(&cl, "bkt", "three").await, data);
    cl.delete_object().bucket("bkt").key("three").send().await.expect("delete");
    let mut n = 1;
    for _ in 0..100 {
        n = srv.blob_files();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 0, "GC reclaims the blob once nothing references it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_crc32_and_crc64nvme() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let data = bytes_of(9, 300_000);
    for algo in [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1,
    ] {
        let key = format!("ck-{}", algo.as_str());
        let put = c
            .put_object()
            .bucket("bkt")
            .key(&key)
            .checksum_algorithm(algo.clone())
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {algo:?}: {e:?}"));
        let got =
            c.get_object().bucket("bkt").key(&key).checksum_mode(ChecksumMode::Enabled).send().await.expect("get");
        let (sent, back) = match algo {
            ChecksumAlgorithm::Crc32 => {
                (put.checksum_crc32().map(str::to_owned), got.checksum_crc32().map(str::to_owned))
            }
            ChecksumAlgorithm::Crc32C => {
                (put.checksum_crc32_c().map(str::to_owned), got.checksum_crc32_c().map(str::to_owned))
            }
            ChecksumAlgorithm::Crc64Nvme => {
                (put.checksum_crc64_nvme().map(str::to_owned), got.checksum_crc64_nvme().map(str::to_owned))
            }
            ChecksumAlgorithm::Sha1 => (put.checksum_sha1().map(str::to_owned), got.checksum_sha1().map(str::to_owned)),
            _ => (put.checksum_sha256().map(str::to_owned), got.checksum_sha256().map(str::to_owned)),
        };
        assert!(back.is_some(), "{algo:?}: GET returns the stored checksum");
        assert_eq!(sent, back, "{algo:?}");
        // The SDK validates the response checksum while reading the body.
        assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), &data[..]);
    }
    let crc = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, crc32fast::hash(&data).to_be_bytes());
    let h =
        c.head_object().bucket("bkt").key("ck-CRC32").checksum_mode(ChecksumMode::Enabled).send().await.expect("head");
    assert_eq!(h.checksum_crc32(), Some(crc.as_str()));
    // A wrong checksum is refused with BadDigest and nothing is stored.
    let e = c
        .put_object()
        .bucket("bkt")
        .key("bad")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect_err("bad digest");
    assert_eq!(code(&e.into_service_error()), "BadDigest");
    let e = c.head_object().bucket("bkt").key("bad").send().await.expect_err("not stored");
    assert!(e.into_service_error().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_delete_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    c.put_object()
        .bucket("bkt")
        .key("src")
        .content_type("text/plain")
        .metadata("a", "1")
        .body(ByteStream::from_static(b"copy"))
        .send()
        .await
        .expect("put");
    let r = c.copy_object().bucket("bkt").key("dst").copy_source("bkt/src").send().await.expect("copy");
    assert!(r.copy_object_result().and_then(|x| x.e_tag()).is_some());
    let h = c.head_object().bucket("bkt").key("dst").send().await.expect("head");
    assert_eq!(h.metadata().and_then(|m| m.get("a")).map(String::as_str), Some("1"));
    c.copy_object()
        .bucket("bkt")
        .key("dst2")
        .copy_source("bkt/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("bkt", "2")
        .content_type("application/json")
        .send()
        .await
        .expect("copy replace");
    let h = c.head_object().bucket("bkt").key("dst2").send().await.expect("head");
    assert_eq!(h.content_type(), Some("application/json"));
    assert!(h.metadata().is_none_or(|m| !m.contains_key("a")));
    let e = c.copy_object().bucket("bkt").key("src").copy_source("bkt/src").send().await.expect_err("self copy");
    assert_eq!(code(&e.into_service_error()), "InvalidRequest");
    let e = c.copy_object().bucket("bkt").key("x").copy_source("bkt/missing").send().await.expect_err("missing");
    assert_eq!(code(&e.into_service_error()), "NoSuchKey");

    let ids: Vec<ObjectIdentifier> = ["src", "dst", "dst2", "never-existed"]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(*k).build().expect("id"))
        .collect();
    let r = delete_ids(&c, "bkt", ids).await;
    assert_eq!(r.deleted().len(), 4);
    assert!(r.errors().is_empty());
    let l = c.list_objects_v2().bucket("bkt").send().await.expect("list");
    assert!(l.contents().is_empty());
}

/// WAL-G sends `<VersionId></VersionId>` with every key: it must delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_with_empty_version_id_really_deletes() {
    let dir = tempfile::tempdir().expect("tmp");
    // Plain S3 semantics for this bucket: WAL-aware delete protection would
    // (rightly) keep a just-written WAL segment.
    let srv = Server::start(dir.path(), &["--bucket", "bkt", "--delete-protection", "allow"]);
    let c = srv.client();
    c.put_object()
        .bucket("bkt")
        .key("pfx/wal_005/000000010000000000000001.lz4")
        .body(ByteStream::from_static(b"w"))
        .send()
        .await
        .expect("put");
    let body = r#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><VersionId></VersionId><Key>pfx/wal_005/000000010000000000000001.lz4</Key></Object></Delete>"#;
    let req = common::signed_request(srv.port, "POST", "/bkt", &[("delete", "")], body.as_bytes(), &[]);
    let (status, _, resp) = raw_http(srv.port, &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert!(String::from_utf8_lossy(&resp).contains("<Deleted>"));
    let l = c.list_objects_v2().bucket("bkt").send().await.expect("list");
    assert!(l.contents().is_empty(), "the object is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_unsupported_operations() {
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let wrong = common::client_for(&srv.endpoint(), common::ACCESS_KEY, "not-the-secret");
    let e = wrong.list_objects_v2().bucket("bkt").send().await.expect_err("bad secret");
    assert_eq!(code(&e.into_service_error()), "SignatureDoesNotMatch");
    let unknown = common::client_for(&srv.endpoint(), "AKIAUNKNOWN", "x");
    let e = unknown.list_objects_v2().bucket("bkt").send().await.expect_err("unknown key");
    assert_eq!(code(&e.into_service_error()), "InvalidAccessKeyId");
    let c = srv.client();
    let e = c.get_bucket_acl().bucket("bkt").send().await.expect_err("acl");
    assert_eq!(code(&e.into_service_error()), "NotImplemented");
    // Anonymous requests are refused with XML.
    let (status, _, body) = raw_http(srv.port, b"GET /bkt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("<Code>AccessDenied</Code>"));
}

/// Issue 16 through the Rust SDK: a retried Complete, a checksum on Complete,
/// conditional writes and deletes, 304 validators, listing details, CreateBucket twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_sdks_rely_on() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().expect("tmp");
    let srv = Server::start(dir.path(), &["--bucket", "bkt"]);
    let c = srv.client();
    let b64 = |raw: &[u8]| base64::engine::general_purpose::STANDARD.encode(raw);

    // Complete: a wrong composite SHA-256 is BadDigest; the right one succeeds; a retry
    // answers the same; another part list is NoSuchUpload.
    let parts = [bytes_of(21, 5 << 20), bytes_of(22, 777)];
    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("mp")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create");
    let id = up.upload_id().expect("id").to_owned();
    let mut done = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let r = c
            .upload_part()
            .bucket("bkt")
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("part");
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().expect("etag"))
                .checksum_sha256(r.checksum_sha256().expect("part checksum"))
                .build(),
        );
    }
    let digests: Vec<u8> = parts.iter().flat_map(|p| Sha256::digest(p).to_vec()).collect();
    let composite = format!("{}-2", b64(&Sha256::digest(&digests)));
    let list = CompletedMultipartUpload::builder().set_parts(Some(done.clone())).build();
    let complete = |sum: String, list: CompletedMultipartUpload| {
        c.complete_multipart_upload()
            .bucket("bkt")
            .key("mp")
            .upload_id(&id)
            .checksum_sha256(sum)
            .multipart_upload(list)
            .send()
    };
    let wrong = format!("{}-2", b64(&Sha256::digest(b"other")));
    assert_eq!(code(&complete(wrong, list.clone()).await.expect_err("wrong checksum")), "BadDigest");
    let first = complete(composite.clone(), list.clone()).await.expect("complete");
    assert_eq!(first.checksum_sha256(), Some(composite.as_str()));
    let again = complete(composite.clone(), list.clone()).await.expect("retried complete");
    assert_eq!((again.e_tag(), again.checksum_sha256()), (first.e_tag(), first.checksum_sha256()));
    let shorter = CompletedMultipartUpload::builder().set_parts(Some(done[..1].to_vec())).build();
    assert_eq!(code(&complete(composite.clone(), shorter).await.expect_err("other list")), "NoSuchUpload");
    assert_eq!(get_bytes(&c, "bkt", "mp").await, parts.concat());

    // Conditional writes.
    let err = c.put_object().bucket("bkt").key("cw").if_match("\"00\"").body(ByteStream::from_static(b"1")).send();
    assert_eq!(code(&err.await.expect_err("If-Match on nothing")), "NoSuchKey");
    let v1 = c.put_object().bucket("bkt").key("cw").if_none_match("*").body(ByteStream::from_static(b"1")).send();
    let v1 = v1.await.expect("create").e_tag().expect("etag").to_owned();
    let again = c.put_object().bucket("bkt").key("cw").if_none_match("*").body(ByteStream::from_static(b"2")).send();
    assert_eq!(code(&again.await.expect_err("exists")), "PreconditionFailed");
    let v2 = c.put_object().bucket("bkt").key("cw").if_match(&v1).body(ByteStream::from_static(b"2")).send();
    let v2 = v2.await.expect("swap").e_tag().expect("etag").to_owned();
    let stale = c.put_object().bucket("bkt").key("cw").if_match(&v1).body(ByteStream::from_static(b"3")).send();
    assert_eq!(code(&stale.await.expect_err("stale")), "PreconditionFailed");

    // 304 carries ETag and Last-Modified.
    let nm = c.get_object().bucket("bkt").key("cw").if_none_match(&v2).send().await.expect_err("304");
    let raw = nm.raw_response().expect("raw response");
    assert_eq!(raw.status().as_u16(), 304);
    assert_eq!(raw.headers().get("etag"), Some(v2.as_str()));
    assert!(raw.headers().get("last-modified").is_some());

    // Conditional deletes.
    let wrong = c.delete_object().bucket("bkt").key("cw").if_match(&v1).send().await.expect_err("stale etag");
    assert_eq!(code(&wrong), "PreconditionFailed");
    let wrong = c.delete_object().bucket("bkt").key("cw").if_match_size(99).send().await.expect_err("size");
    assert_eq!(code(&wrong), "PreconditionFailed");
    c.delete_object().bucket("bkt").key("cw").if_match(&v2).if_match_size(1).send().await.expect("delete");
    let gone = c.delete_object().bucket("bkt").key("cw").if_match("*").send().await.expect_err("gone");
    assert_eq!(code(&gone), "NoSuchKey");
    let a = c.put_object().bucket("bkt").key("a").body(ByteStream::from_static(b"a")).send().await.expect("a");
    c.put_object().bucket("bkt").key("b").body(ByteStream::from_static(b"b")).send().await.expect("b");
    let ids = vec![
        ObjectIdentifier::builder().key("a").e_tag(a.e_tag().expect("etag")).build().expect("id"),
        ObjectIdentifier::builder().key("b").e_tag(a.e_tag().expect("etag")).build().expect("id"),
    ];
    let r = delete_ids(&c, "bkt", ids).await;
    assert_eq!(r.deleted().iter().filter_map(|d| d.key()).collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(
        r.errors().iter().map(|e| (e.key(), e.code())).collect::<Vec<_>>(),
        vec![(Some("b"), Some("PreconditionFailed"))]
    );

    // Listing details.
    let l = c.list_objects_v2().bucket("bkt").fetch_owner(true).send().await.expect("list");
    assert!(l.contents().iter().all(|o| o.owner().and_then(|o| o.id()).is_some()));
    let l = c.list_objects_v2().bucket("bkt").send().await.expect("list");
    assert!(l.contents().iter().all(|o| o.owner().is_none()));
    let zero = c.list_objects_v2().bucket("bkt").max_keys(0).send().await.expect("max-keys 0");
    assert_eq!((zero.key_count(), zero.is_truncated()), (Some(0), Some(false)));
    let p1 = c.list_objects_v2().bucket("bkt").max_keys(1).send().await.expect("page 1");
    let token = p1.next_continuation_token().expect("token").to_owned();
    let p2 = c.list_objects_v2().bucket("bkt").max_keys(1).continuation_token(&token).send().await.expect("page 2");
    assert_eq!(p2.continuation_token(), Some(token.as_str()));

    // CreateBucket of an existing bucket by its owner, outside us-east-1.
    let twice = c.create_bucket().bucket("bkt").send().await.expect_err("exists");
    assert_eq!(code(&twice), "BucketAlreadyOwnedByYou");
}
