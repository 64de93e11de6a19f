//! REAPI v2 over gRPC with real tonic clients against a real `kurad`
//! listener: every RPC, its errors, resumable ByteStream writes, sharing the
//! store with the Bazel HTTP protocol, tokens and the gRPC-only port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod reapi_support;

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::{QueryWriteStatusRequest, ReadRequest, WriteRequest};
use futures_util::StreamExt;
use prost::Message;
use reapi_support::{Node, Options, blob, digest, sha256_hex};
use tonic::Code;

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn find(instance: &str, digests: Vec<re::Digest>) -> re::FindMissingBlobsRequest {
    re::FindMissingBlobsRequest {
        instance_name: instance.into(),
        blob_digests: digests,
        digest_function: 0,
    }
}

fn update(instance: &str, blobs: Vec<(re::Digest, Vec<u8>)>) -> re::BatchUpdateBlobsRequest {
    re::BatchUpdateBlobsRequest {
        instance_name: instance.into(),
        requests: blobs
            .into_iter()
            .map(|(d, data)| re::batch_update_blobs_request::Request {
                digest: Some(d),
                data,
                compressor: 0,
            })
            .collect(),
        digest_function: 0,
    }
}

fn read_req(instance: &str, digests: Vec<re::Digest>) -> re::BatchReadBlobsRequest {
    re::BatchReadBlobsRequest {
        instance_name: instance.into(),
        digests,
        acceptable_compressors: vec![],
        digest_function: 0,
    }
}

fn resource(instance: &str, d: &re::Digest) -> String {
    let prefix = if instance.is_empty() {
        String::new()
    } else {
        format!("{instance}/")
    };
    format!("{prefix}blobs/{}/{}", d.hash, d.size_bytes)
}

fn upload_resource(instance: &str, uuid: &str, d: &re::Digest) -> String {
    let prefix = if instance.is_empty() {
        String::new()
    } else {
        format!("{instance}/")
    };
    format!("{prefix}uploads/{uuid}/blobs/{}/{}", d.hash, d.size_bytes)
}

/// Write messages for `data[from..]` in `chunk`-byte pieces, the last one
/// with `finish_write` when `finish`.
fn write_msgs(
    name: &str,
    data: &[u8],
    from: usize,
    to: usize,
    chunk: usize,
    finish: bool,
) -> Vec<WriteRequest> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to || out.is_empty() {
        let end = (at + chunk).min(to);
        out.push(WriteRequest {
            resource_name: if out.is_empty() {
                name.to_owned()
            } else {
                String::new()
            },
            write_offset: at as i64,
            finish_write: finish && end == to,
            data: data[at..end].to_vec(),
        });
        at = end;
        if at == to {
            break;
        }
    }
    out
}

async fn read_all(
    node: &Node,
    name: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut bs = node.bs().await;
    let mut stream = bs
        .read(ReadRequest {
            resource_name: name.into(),
            read_offset: offset,
            read_limit: limit,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.extend_from_slice(&m?.data);
    }
    Ok(out)
}

fn action_result(files: &[(&str, &re::Digest)]) -> re::ActionResult {
    re::ActionResult {
        output_files: files
            .iter()
            .map(|(p, d)| re::OutputFile {
                path: (*p).into(),
                digest: Some((*d).clone()),
                ..Default::default()
            })
            .collect(),
        exit_code: 0,
        ..Default::default()
    }
}

#[tokio::test]
async fn capabilities_are_true_limits() {
    let node = Node::start_with(Options {
        tweak: Box::new(|c| c.limits.object = 123_456_789),
        ..Options::default()
    })
    .await;
    let caps = node
        .caps()
        .await
        .get_capabilities(re::GetCapabilitiesRequest {
            instance_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let c = caps.cache_capabilities.unwrap();
    assert_eq!(
        c.digest_functions,
        vec![re::digest_function::Value::Sha256 as i32]
    );
    assert!(c.action_cache_update_capabilities.unwrap().update_enabled);
    assert_eq!(
        c.max_batch_total_size_bytes,
        kurad::reapi::MAX_BATCH_TOTAL_SIZE as i64
    );
    assert_eq!(c.max_cas_blob_size_bytes, 123_456_789);
    assert!(c.supported_compressors.is_empty());
    assert!(caps.execution_capabilities.is_none());
    assert_eq!(caps.low_api_version.unwrap().major, 2);

    // The advertised batch limit is accepted: a batch of exactly that many bytes.
    let n = 4;
    let size = kurad::reapi::MAX_BATCH_TOTAL_SIZE as usize / n;
    let blobs: Vec<_> = (0..n as u64)
        .map(|i| {
            let b = blob(i, size);
            (digest(&b), b)
        })
        .collect();
    let resp = node
        .cas()
        .await
        .batch_update_blobs(update("", blobs.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.responses
            .iter()
            .all(|r| r.status.as_ref().unwrap().code == 0)
    );
    let got = node
        .cas()
        .await
        .batch_read_blobs(read_req("", blobs.iter().map(|b| b.0.clone()).collect()))
        .await
        .unwrap()
        .into_inner();
    for (r, (_, data)) in got.responses.iter().zip(&blobs) {
        assert_eq!(&r.data, data);
    }
    // One byte more is refused, for writes and for reads.
    let mut over = blobs.clone();
    let extra = blob(99, 1);
    over.push((digest(&extra), extra));
    let e = node
        .cas()
        .await
        .batch_update_blobs(update("", over.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = node
        .cas()
        .await
        .batch_read_blobs(read_req("", over.iter().map(|b| b.0.clone()).collect()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    node.stop().await;
}

#[tokio::test]
async fn cas_batches_verify_every_blob_and_report_per_blob_status() {
    let node = Node::start().await;
    let mut cas = node.cas().await;
    let good = b"good blob".to_vec();
    let liar = b"not what the digest says".to_vec();
    let short = b"short".to_vec();
    let mut short_digest = digest(&short);
    short_digest.size_bytes += 1;
    let missing = digest(b"never uploaded");
    let resp = cas
        .batch_update_blobs(update(
            "",
            vec![
                (digest(&good), good.clone()),
                (digest(b"something else"), liar),
                (short_digest.clone(), short),
                (digest(b""), vec![]),
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = resp
        .responses
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::InvalidArgument as i32,
            Code::InvalidArgument as i32,
            Code::Ok as i32
        ]
    );
    assert_eq!(resp.responses[0].digest, Some(digest(&good)));

    let missing_now = cas
        .find_missing_blobs(find(
            "",
            vec![
                digest(&good),
                digest(b"something else"),
                missing.clone(),
                digest(b""),
                // Right hash, wrong size: missing.
                re::Digest {
                    hash: sha256_hex(&good),
                    size_bytes: 1,
                },
            ],
        ))
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(
        missing_now,
        vec![
            digest(b"something else"),
            missing.clone(),
            re::Digest {
                hash: sha256_hex(&good),
                size_bytes: 1
            }
        ]
    );

    let read = cas
        .batch_read_blobs(read_req("", vec![digest(&good), missing, digest(b"")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.responses[0].data, good);
    assert_eq!(read.responses[0].status.as_ref().unwrap().code, 0);
    assert_eq!(
        read.responses[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );
    assert_eq!(read.responses[2].status.as_ref().unwrap().code, 0);
    assert!(read.responses[2].data.is_empty());

    // Instances are namespaces: nothing leaks across.
    let other = cas
        .find_missing_blobs(find("team-b", vec![digest(&good)]))
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(other, vec![digest(&good)]);
    node.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument() {
    let node = Node::start().await;
    let mut cas = node.cas().await;
    let bad_digests = [
        re::Digest {
            hash: sha256_hex(b"x").to_uppercase(),
            size_bytes: 1,
        },
        re::Digest {
            hash: "abc".into(),
            size_bytes: 1,
        },
        re::Digest {
            hash: sha256_hex(b"x"),
            size_bytes: -1,
        },
        re::Digest {
            hash: EMPTY.into(),
            size_bytes: 3,
        },
    ];
    for d in bad_digests {
        let e = cas
            .find_missing_blobs(find("", vec![d.clone()]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{d:?}: {e:?}");
    }
    for instance in ["a/b", "..", "white space", &"n".repeat(200)] {
        let e = cas
            .find_missing_blobs(find(instance, vec![]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{instance:?}: {e:?}");
    }
    let mut req = find("", vec![digest(b"x")]);
    req.digest_function = re::digest_function::Value::Blake3 as i32;
    let e = cas.find_missing_blobs(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = node
        .ac()
        .await
        .get_action_result(re::GetActionResultRequest {
            instance_name: String::new(),
            action_digest: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // GetTree is documented as unimplemented.
    let e = cas
        .get_tree(re::GetTreeRequest {
            instance_name: String::new(),
            root_digest: Some(digest(b"x")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    // ByteStream resource names.
    for name in [
        "",
        "blobs",
        "blobs/abc/1",
        &format!("blobs/{}/-1", sha256_hex(b"x")),
        &format!("compressed-blobs/zstd/{}/1", sha256_hex(b"x")),
        &format!("blobs/blake3/{}/1", sha256_hex(b"x")),
    ] {
        let e = read_all(&node, name, 0, 0).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {e:?}");
    }
    node.stop().await;
}

#[tokio::test]
async fn bytestream_streams_reads_with_offsets_and_limits() {
    let node = Node::start().await;
    let data = blob(7, (3 << 20) + 12345);
    let d = digest(&data);
    let mut bs = node.bs().await;
    let msgs = write_msgs(
        &upload_resource("", "u1", &d),
        &data,
        0,
        data.len(),
        64 << 10,
        true,
    );
    let resp = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.committed_size, data.len() as i64);
    let name = resource("", &d);
    assert_eq!(read_all(&node, &name, 0, 0).await.unwrap(), data);
    assert_eq!(
        read_all(&node, &name, 1000, 5000).await.unwrap(),
        &data[1000..6000]
    );
    assert_eq!(
        read_all(&node, &name, data.len() as i64 - 10, 0)
            .await
            .unwrap(),
        &data[data.len() - 10..]
    );
    assert!(
        read_all(&node, &name, data.len() as i64, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let e = read_all(&node, &name, data.len() as i64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    let e = read_all(&node, &name, -1, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    let e = read_all(&node, &name, 0, -1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = read_all(&node, &resource("", &digest(b"absent")), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The empty blob is always there.
    assert!(
        read_all(&node, &resource("", &digest(b"")), 0, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Re-uploading an existing blob finishes at once with the full size.
    let msgs = write_msgs(&upload_resource("", "u2", &d), &data, 0, 1024, 1024, false);
    let resp = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.committed_size, data.len() as i64);
    // A single-message write of a small blob.
    let small = b"small".to_vec();
    let sd = digest(&small);
    let msgs = write_msgs(
        &upload_resource("ci", "u3", &sd),
        &small,
        0,
        small.len(),
        1024,
        true,
    );
    bs.write(futures_util::stream::iter(msgs)).await.unwrap();
    assert_eq!(
        read_all(&node, &resource("ci", &sd), 0, 0).await.unwrap(),
        small
    );
    node.stop().await;
}

#[tokio::test]
async fn bytestream_writes_are_verified_and_leave_no_trace() {
    let node = Node::start_with(Options {
        tweak: Box::new(|c| c.limits.object = 1 << 20),
        ..Options::default()
    })
    .await;
    let mut bs = node.bs().await;
    let data = blob(1, 100_000);
    let mut lie = digest(&data);
    lie.hash = sha256_hex(b"other");
    // Wrong content for the digest.
    let msgs = write_msgs(
        &upload_resource("", "a", &lie),
        &data,
        0,
        data.len(),
        30_000,
        true,
    );
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = read_all(&node, &resource("", &lie), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // More bytes than declared.
    let mut small = digest(&data);
    small.size_bytes = 10;
    let msgs = write_msgs(&upload_resource("", "b", &small), &data, 0, 1000, 500, true);
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // finish_write before every byte.
    let d = digest(&data);
    let msgs = write_msgs(
        &upload_resource("", "c", &d),
        &data,
        0,
        50_000,
        10_000,
        true,
    );
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Offsets that skip bytes.
    let mut msgs = write_msgs(
        &upload_resource("", "d", &d),
        &data,
        0,
        data.len(),
        10_000,
        true,
    );
    msgs[3].write_offset += 1;
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Over the per-blob limit (the advertised max_cas_blob_size_bytes).
    let big = re::Digest {
        hash: sha256_hex(b"big"),
        size_bytes: (1 << 20) + 1,
    };
    let msgs = write_msgs(&upload_resource("", "e", &big), &data, 0, 10, 10, false);
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(node.state.store.stats().objects, 0);
    node.stop().await;
}

#[tokio::test]
async fn bytestream_writes_resume_after_a_broken_stream() {
    let node = Node::start().await;
    let mut bs = node.bs().await;
    let data = blob(3, 1_000_000);
    let d = digest(&data);
    let name = upload_resource("", "resume-1", &d);
    let status =
        |bs: &mut bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient<
            _,
        >,
         name: String| {
            let mut bs = bs.clone();
            async move {
                bs.query_write_status(QueryWriteStatusRequest {
                    resource_name: name,
                })
                .await
            }
        };
    // Nothing yet.
    let e = status(&mut bs, name.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // 1. A stream that ends without finish_write keeps what it sent.
    let msgs = write_msgs(&name, &data, 0, 300_000, 100_000, false);
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let st = status(&mut bs, name.clone()).await.unwrap().into_inner();
    assert_eq!((st.committed_size, st.complete), (300_000, false));

    // 2. A client that dies mid-stream: the server keeps the bytes it got.
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let mut bs2 = node.bs().await;
    let call = tokio::spawn(async move { bs2.write(tokio_stream_from(rx)).await });
    for m in write_msgs(&name, &data, 300_000, 600_000, 100_000, false) {
        tx.send(m).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = status(&mut bs, name.clone()).await.unwrap().into_inner();
        if st.committed_size == 600_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {}",
            st.committed_size
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    drop(tx);
    let _ = call.await;

    // A resume past the committed size is refused.
    let msgs = write_msgs(&name, &data, 700_000, data.len(), 100_000, true);
    let e = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // 3. Resume from the committed size and finish.
    let st = status(&mut bs, name.clone()).await.unwrap().into_inner();
    assert_eq!(st.committed_size, 600_000);
    let msgs = write_msgs(&name, &data, 600_000, data.len(), 100_000, true);
    let resp = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.committed_size, data.len() as i64);
    let st = status(&mut bs, name.clone()).await.unwrap().into_inner();
    assert_eq!((st.committed_size, st.complete), (data.len() as i64, true));
    assert_eq!(
        read_all(&node, &resource("", &d), 0, 0).await.unwrap(),
        data
    );

    // 4. Restarting an upload from an earlier offset rewrites from there.
    let other = blob(4, 200_000);
    let od = digest(&other);
    let oname = upload_resource("", "resume-2", &od);
    let msgs = write_msgs(&oname, &other, 0, 150_000, 50_000, false);
    let _ = bs
        .write(futures_util::stream::iter(msgs))
        .await
        .unwrap_err();
    let msgs = write_msgs(&oname, &other, 50_000, other.len(), 50_000, true);
    bs.write(futures_util::stream::iter(msgs)).await.unwrap();
    assert_eq!(
        read_all(&node, &resource("", &od), 0, 0).await.unwrap(),
        other
    );
    // No temporary files are left behind.
    let dir = node.state.config.tmp_dir.join(kurad::reapi::UPLOADS_DIR);
    let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
    node.stop().await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<WriteRequest>,
) -> impl futures_util::Stream<Item = WriteRequest> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn action_results_reference_their_outputs() {
    let node = Node::start().await;
    let mut ac = node.ac().await;
    let mut cas = node.cas().await;
    let out = b"output file".to_vec();
    let od = digest(&out);
    let action = digest(b"action-1");
    let get =
        |ac: &mut re::action_cache_client::ActionCacheClient<_>, instance: &str, d: &re::Digest| {
            let mut ac = ac.clone();
            let req = re::GetActionResultRequest {
                instance_name: instance.into(),
                action_digest: Some(d.clone()),
                ..Default::default()
            };
            async move { ac.get_action_result(req).await }
        };
    assert_eq!(
        get(&mut ac, "", &action).await.unwrap_err().code(),
        Code::NotFound
    );
    let result = action_result(&[("out/a", &od)]);
    let upd = |d: &re::Digest, r: &re::ActionResult| re::UpdateActionResultRequest {
        instance_name: String::new(),
        action_digest: Some(d.clone()),
        action_result: Some(r.clone()),
        ..Default::default()
    };
    // The output is not in the CAS yet: refused.
    let e = ac
        .update_action_result(upd(&action, &result))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    cas.batch_update_blobs(update("", vec![(od.clone(), out.clone())]))
        .await
        .unwrap();
    let stored = ac
        .update_action_result(upd(&action, &result))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, result);
    assert_eq!(
        get(&mut ac, "", &action).await.unwrap().into_inner(),
        result
    );

    // Output directories: the tree and every file inside it are referenced.
    let inner = b"file inside a tree".to_vec();
    let id = digest(&inner);
    let tree = re::Tree {
        root: Some(re::Directory {
            files: vec![re::FileNode {
                name: "f".into(),
                digest: Some(id.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        children: vec![],
    };
    let tree_bytes = tree.encode_to_vec();
    let td = digest(&tree_bytes);
    cas.batch_update_blobs(update(
        "",
        vec![(id.clone(), inner.clone()), (td.clone(), tree_bytes)],
    ))
    .await
    .unwrap();
    let action2 = digest(b"action-2");
    let mut result2 = action_result(&[]);
    result2.output_directories.push(re::OutputDirectory {
        path: "out/dir".into(),
        tree_digest: Some(td.clone()),
        ..Default::default()
    });
    ac.update_action_result(upd(&action2, &result2))
        .await
        .unwrap();
    assert!(get(&mut ac, "", &action2).await.is_ok());

    // A file inside the tree is evicted: the result is gone with it.
    let account = node.state.config.account.clone();
    let ns = kura_store::Namespace::new("default").unwrap();
    let cas_obj = |h: &str| {
        kura_store::ObjectId::new(
            account.clone(),
            ns.clone(),
            kura_store::Key::new(format!("cas/{h}")).unwrap(),
        )
    };
    node.state.store.delete(&cas_obj(&id.hash)).await.unwrap();
    assert_eq!(
        get(&mut ac, "", &action2).await.unwrap_err().code(),
        Code::NotFound
    );
    // And the direct output of the first action.
    node.state.store.delete(&cas_obj(&od.hash)).await.unwrap();
    assert_eq!(
        get(&mut ac, "", &action).await.unwrap_err().code(),
        Code::NotFound
    );
    node.stop().await;
}

#[tokio::test]
async fn eviction_never_leaves_a_dangling_action_result() {
    let node = Node::start().await;
    let mut ac = node.ac().await;
    let mut cas = node.cas().await;
    let out = blob(11, 100_000);
    let od = digest(&out);
    cas.batch_update_blobs(update("", vec![(od.clone(), out)]))
        .await
        .unwrap();
    let action = digest(b"evicted action");
    ac.update_action_result(re::UpdateActionResultRequest {
        instance_name: String::new(),
        action_digest: Some(action.clone()),
        action_result: Some(action_result(&[("o", &od)])),
        ..Default::default()
    })
    .await
    .unwrap();
    // Real LRU eviction down to nothing.
    node.state.store.evict_to(0).await.unwrap();
    let e = ac
        .get_action_result(re::GetActionResultRequest {
            action_digest: Some(action),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    node.stop().await;
}

#[tokio::test]
async fn http_and_grpc_share_objects_and_namespaces() {
    let node = Node::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // HTTP CAS write → gRPC reads (namespace `team` = instance `team`).
    let a = b"written over http".to_vec();
    let ad = digest(&a);
    let r = http
        .put(node.url(&format!("/ns/team/bazel/cas/{}", ad.hash)))
        .body(a.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        read_all(&node, &resource("team", &ad), 0, 0).await.unwrap(),
        a
    );
    let missing = node
        .cas()
        .await
        .find_missing_blobs(find("team", vec![ad.clone()]))
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert!(missing.is_empty());

    // gRPC write (default instance) → HTTP read at the root mount.
    let b = blob(5, 200_000);
    let bd = digest(&b);
    node.bs()
        .await
        .write(futures_util::stream::iter(write_msgs(
            &upload_resource("", "x", &bd),
            &b,
            0,
            b.len(),
            16 << 10,
            true,
        )))
        .await
        .unwrap();
    let got = http
        .get(node.url(&format!("/bazel/cas/{}", bd.hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b.as_slice());

    // HTTP action result → gRPC GetActionResult, and back.
    let action = digest(b"http action");
    let result = action_result(&[("out", &ad)]);
    let r = http
        .put(node.url(&format!("/ns/team/bazel/ac/{}", action.hash)))
        .body(result.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let got = node
        .ac()
        .await
        .get_action_result(re::GetActionResultRequest {
            instance_name: "team".into(),
            action_digest: Some(action.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, result);
    let action2 = digest(b"grpc action");
    let result2 = action_result(&[("out", &bd)]);
    node.ac()
        .await
        .update_action_result(re::UpdateActionResultRequest {
            action_digest: Some(action2.clone()),
            action_result: Some(result2.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = http
        .get(node.url(&format!("/bazel/ac/{}", action2.hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let decoded = re::ActionResult::decode(got.bytes().await.unwrap()).unwrap();
    assert_eq!(decoded, result2);
    // gRPC on the public port does not disturb HTTP on it.
    assert_eq!(
        http.get(node.url("/up")).send().await.unwrap().status(),
        200
    );
    // gRPC calls are counted, by method and gRPC status.
    let metrics = http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kura_http_requests_total{")
                && l.contains(
                    "route=\"/build.bazel.remote.execution.v2.ActionCache/GetActionResult\""
                )
                && l.contains("method=\"GRPC\"")),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn tokens_guard_grpc_like_http() {
    let node = Node::start_with(Options {
        tokens: Some("writer rw *\nreader ro default\n"),
        ..Options::default()
    })
    .await;
    let with = |token: Option<&str>, msg: re::FindMissingBlobsRequest| {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let mut cas = node.cas().await;
    let e = cas
        .find_missing_blobs(with(None, find("", vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = cas
        .find_missing_blobs(with(Some("nope"), find("", vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    cas.find_missing_blobs(with(Some("reader"), find("", vec![])))
        .await
        .unwrap();
    let e = cas
        .find_missing_blobs(with(Some("reader"), find("other", vec![])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Writes need a rw token.
    let data = b"x".to_vec();
    let mut req = tonic::Request::new(update("", vec![(digest(&data), data.clone())]));
    req.metadata_mut()
        .insert("authorization", "Bearer reader".parse().unwrap());
    assert_eq!(
        cas.batch_update_blobs(req).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut req = tonic::Request::new(futures_util::stream::iter(write_msgs(
        &upload_resource("", "u", &digest(&data)),
        &data,
        0,
        1,
        1,
        true,
    )));
    req.metadata_mut()
        .insert("authorization", "Bearer reader".parse().unwrap());
    assert_eq!(
        node.bs().await.write(req).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut req = tonic::Request::new(update("", vec![(digest(&data), data.clone())]));
    req.metadata_mut()
        .insert("authorization", "Bearer writer".parse().unwrap());
    cas.batch_update_blobs(req).await.unwrap();
    // A read-only token is told the action cache is read-only.
    let mut req = tonic::Request::new(re::GetCapabilitiesRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer reader".parse().unwrap());
    let caps = node
        .caps()
        .await
        .get_capabilities(req)
        .await
        .unwrap()
        .into_inner();
    assert!(
        !caps
            .cache_capabilities
            .unwrap()
            .action_cache_update_capabilities
            .unwrap()
            .update_enabled
    );
    node.stop().await;
}

#[tokio::test]
async fn a_full_store_is_resource_exhausted() {
    let mut store = kura_store::Config::default();
    store.capacity = kura_store::Capacity::Bytes(64 << 10);
    let node = Node::start_with(Options {
        store,
        ..Options::default()
    })
    .await;
    let data = blob(9, 100_000);
    let resp = node
        .cas()
        .await
        .batch_update_blobs(update("", vec![(digest(&data), data.clone())]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.responses[0].status.as_ref().unwrap().code,
        Code::ResourceExhausted as i32
    );
    let e = node
        .bs()
        .await
        .write(futures_util::stream::iter(write_msgs(
            &upload_resource("", "full", &digest(&data)),
            &data,
            0,
            data.len(),
            30_000,
            true,
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    node.stop().await;
}

#[tokio::test]
async fn grpc_port_serves_the_same_store() {
    let node = Node::start_with(Options {
        tweak: Box::new(|c| c.grpc_listen = Some(([127, 0, 0, 1], 0).into())),
        ..Options::default()
    })
    .await;
    let grpc_addr = node.grpc_addr.expect("KURA_GRPC_PORT listener");
    assert_ne!(grpc_addr, node.addr);
    let data = b"via the grpc port".to_vec();
    let mut cas = reapi_support::CasClient::new(reapi_support::channel_to(grpc_addr).await);
    cas.batch_update_blobs(update("", vec![(digest(&data), data.clone())]))
        .await
        .unwrap();
    // Visible on the public port over gRPC and HTTP.
    let got = node
        .cas()
        .await
        .batch_read_blobs(read_req("", vec![digest(&data)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.responses[0].data, data);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .get(node.url(&format!("/bazel/cas/{}", sha256_hex(&data))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    node.stop().await;
}

#[test]
fn grpc_port_is_a_validated_flag() {
    use clap::Parser;
    let args = kurad::Args::try_parse_from(["kurad", "--grpc-port", "9092"]).unwrap();
    assert_eq!(args.validate().unwrap().grpc_listen.unwrap().port(), 9092);
    let args = kurad::Args::try_parse_from(["kurad", "--grpc-port", "x"]).unwrap();
    let errs = args.validate().unwrap_err();
    assert_eq!(errs[0].env, "KURA_GRPC_PORT");
    let args = kurad::Args::try_parse_from(["kurad"]).unwrap();
    assert!(args.validate().unwrap().grpc_listen.is_none());
}

/// An action-cache hit refreshes the outputs it names in the LRU: with
/// `--remote_download_minimal` Bazel never reads them, and they must not age
/// out (taking the hot result with them) before untouched blobs do.
#[tokio::test]
async fn action_cache_hits_keep_their_outputs_young() {
    let clock = std::sync::Arc::new(kura_store::ManualClock::new(1_000_000));
    let mut store = kura_store::Config::default();
    store.clock = clock.clone();
    let node = Node::start_with(Options {
        store,
        ..Options::default()
    })
    .await;
    let mut cas = node.cas().await;
    let out = blob(21, 10_000);
    let od = digest(&out);
    let other = blob(22, 10_000);
    let xd = digest(&other);
    // The output is older than the unrelated blob.
    cas.batch_update_blobs(update("", vec![(od.clone(), out)]))
        .await
        .unwrap();
    clock.advance(1_000);
    cas.batch_update_blobs(update("", vec![(xd.clone(), other)]))
        .await
        .unwrap();
    clock.advance(1_000);
    let action = digest(b"hot action");
    let mut ac = node.ac().await;
    ac.update_action_result(re::UpdateActionResultRequest {
        action_digest: Some(action.clone()),
        action_result: Some(action_result(&[("o", &od)])),
        ..Default::default()
    })
    .await
    .unwrap();
    clock.advance(1_000);
    ac.get_action_result(re::GetActionResultRequest {
        action_digest: Some(action.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let store = &node.state.store;
    store.flush_access().await.unwrap();
    // Evict the least recently used object only.
    store
        .evict_to(store.stats().bytes.saturating_sub(1))
        .await
        .unwrap();
    let missing = cas
        .find_missing_blobs(find("", vec![od.clone(), xd.clone()]))
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(missing, vec![xd], "the untouched blob goes first");
    ac.get_action_result(re::GetActionResultRequest {
        action_digest: Some(action),
        ..Default::default()
    })
    .await
    .unwrap();
    node.stop().await;
}

/// Waits (with a deadline) until `kura_http_requests_in_flight` is `n`.
async fn wait_in_flight(node: &Node, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.state.metrics.in_flight.get() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "in-flight gauge stuck at {}, want {n}",
            node.state.metrics.in_flight.get()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn grpc_calls_share_the_in_flight_limit_with_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start_with(Options {
        tweak: Box::new(|c| c.max_in_flight = 1),
        ..Options::default()
    })
    .await;
    // An HTTP PUT whose body has not all arrived holds the only slot.
    let mut http = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    http.write_all(
        b"PUT /cache/held HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\n12345",
    )
    .await
    .unwrap();
    wait_in_flight(&node, 1).await;
    let e = node
        .caps()
        .await
        .get_capabilities(re::GetCapabilitiesRequest {
            instance_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // With a google.rpc.RetryInfo detail asking for a 1 s back-off.
    let details = bazel_remote_apis::google::rpc::Status::decode(e.details()).unwrap();
    assert_eq!(details.code, Code::Unavailable as i32);
    let info = details
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("RetryInfo detail");
    // RetryInfo { retry_delay (1): Duration { seconds (1): 1 } }.
    assert_eq!(info.value, [0x0a, 0x02, 0x08, 0x01]);
    let rejected_before = node.state.metrics.rejected.get();
    assert!(rejected_before >= 1);
    // The HTTP request completes normally; then gRPC is admitted again.
    http.write_all(b"67890").await.unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    wait_in_flight(&node, 0).await;
    node.caps()
        .await
        .get_capabilities(re::GetCapabilitiesRequest {
            instance_name: String::new(),
        })
        .await
        .unwrap();

    // The other way round: a ByteStream upload in progress holds the slot and
    // HTTP gets 503 with Retry-After.
    let data = blob(11, 100_000);
    let d = digest(&data);
    let msgs = write_msgs(
        &upload_resource("", "held", &d),
        &data,
        0,
        data.len(),
        50_000,
        true,
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut bs = node.bs().await;
    let upload = tokio::spawn(async move { bs.write(stream).await });
    let mut msgs = msgs.into_iter();
    tx.send(msgs.next().unwrap()).await.unwrap();
    wait_in_flight(&node, 1).await;
    let r = reqwest::get(node.url("/up")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let written = upload.await.unwrap().unwrap().into_inner();
    assert_eq!(written.committed_size, data.len() as i64);
    wait_in_flight(&node, 0).await;
    assert_eq!(
        reqwest::get(node.url("/up")).await.unwrap().status(),
        reqwest::StatusCode::OK
    );
    node.stop().await;
}
