//! REAPI latency benchmark: `FindMissingBlobs` of 10,000 digests and
//! `BatchReadBlobs` of 1,000 × 4 KiB blobs over gRPC against a real `kurad`
//! listener on loopback, each next to the same work done with Bazel's HTTP
//! protocol on the same server (HEAD / GET per blob, 16 concurrent keep-alive
//! connections), plus a 64 MiB ByteStream read and write.
//!
//! `cargo bench -p kurad --bench reapi` (env `ROUNDS`, default 20).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs,
    unreachable_pub
)]

#[path = "../tests/reapi_support/mod.rs"]
mod reapi_support;

use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use futures_util::StreamExt;
use reapi_support::{Node, blob, digest};

const HTTP_CONCURRENCY: usize = 16;

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new() -> Self {
        Self {
            samples: Vec::new(),
        }
    }

    fn pct(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i]
    }

    fn mean(&self) -> f64 {
        self.samples
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .sum::<f64>()
            / self.samples.len() as f64
    }
}

fn row(name: &str, s: &Stats) {
    println!(
        "{name:<48} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        s.pct(0.5),
        s.pct(0.99),
        s.pct(0.0),
        s.mean()
    );
}

async fn upload(node: &Node, blobs: &[(re::Digest, Vec<u8>)]) {
    let mut cas = node.cas().await;
    for chunk in blobs.chunks(500) {
        let resp = cas
            .batch_update_blobs(re::BatchUpdateBlobsRequest {
                instance_name: String::new(),
                requests: chunk
                    .iter()
                    .map(|(d, data)| re::batch_update_blobs_request::Request {
                        digest: Some(d.clone()),
                        data: data.clone(),
                        compressor: 0,
                    })
                    .collect(),
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            resp.responses
                .iter()
                .all(|r| r.status.as_ref().unwrap().code == 0)
        );
    }
}

async fn http_each(
    client: &reqwest::Client,
    node: &Node,
    digests: &[re::Digest],
    head: bool,
) -> usize {
    futures_util::stream::iter(digests)
        .map(|d| {
            let url = node.url(&format!("/bazel/cas/{}", d.hash));
            async move {
                let req = if head {
                    client.head(url)
                } else {
                    client.get(url)
                };
                let r = req.send().await.unwrap();
                let ok = r.status().is_success();
                let _ = r.bytes().await.unwrap();
                usize::from(ok)
            }
        })
        .buffer_unordered(HTTP_CONCURRENCY)
        .fold(0, |a, b| async move { a + b })
        .await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let node = Node::start().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(HTTP_CONCURRENCY)
        .build()
        .unwrap();

    // 5,000 stored blobs of 100 bytes and 5,000 digests that are not stored.
    let stored: Vec<(re::Digest, Vec<u8>)> = (0..5_000u64)
        .map(|i| {
            let b = blob(i, 100);
            (digest(&b), b)
        })
        .collect();
    upload(&node, &stored).await;
    let mut query: Vec<re::Digest> = stored.iter().map(|(d, _)| d.clone()).collect();
    query.extend((0..5_000u64).map(|i| digest(&blob(1_000_000 + i, 100))));

    // 1,000 blobs of 4 KiB.
    let small: Vec<(re::Digest, Vec<u8>)> = (0..1_000u64)
        .map(|i| {
            let b = blob(2_000_000 + i, 4096);
            (digest(&b), b)
        })
        .collect();
    upload(&node, &small).await;
    let small_digests: Vec<re::Digest> = small.iter().map(|(d, _)| d.clone()).collect();

    // 64 MiB for ByteStream.
    let big = blob(42, 64 << 20);
    let big_digest = digest(&big);

    let mut cas = node.cas().await;
    let mut bs = node.bs().await;
    let (mut fm, mut fm_http, mut br, mut br_http, mut bs_read, mut bs_write) = (
        Stats::new(),
        Stats::new(),
        Stats::new(),
        Stats::new(),
        Stats::new(),
        Stats::new(),
    );
    for round in 0..=rounds {
        let warm = round == 0;
        let t = Instant::now();
        let missing = cas
            .find_missing_blobs(re::FindMissingBlobsRequest {
                instance_name: String::new(),
                blob_digests: query.clone(),
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .missing_blob_digests;
        let e = t.elapsed();
        assert_eq!(missing.len(), 5_000);
        if !warm {
            fm.samples.push(e);
        }

        let t = Instant::now();
        let found = http_each(&client, &node, &query, true).await;
        let e = t.elapsed();
        assert_eq!(found, 5_000);
        if !warm {
            fm_http.samples.push(e);
        }

        let t = Instant::now();
        let got = cas
            .batch_read_blobs(re::BatchReadBlobsRequest {
                instance_name: String::new(),
                digests: small_digests.clone(),
                acceptable_compressors: vec![],
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let e = t.elapsed();
        assert!(got.responses.iter().all(|r| r.data.len() == 4096));
        if !warm {
            br.samples.push(e);
        }

        let t = Instant::now();
        let n = http_each(&client, &node, &small_digests, false).await;
        let e = t.elapsed();
        assert_eq!(n, 1_000);
        if !warm {
            br_http.samples.push(e);
        }

        // ByteStream: write a fresh 64 MiB blob each round (a new namespace
        // per round, so it is never already there), then read it back.
        let instance = format!("bench-{round}");
        let name = format!(
            "{instance}/uploads/r{round}/blobs/{}/{}",
            big_digest.hash, big_digest.size_bytes
        );
        let msgs: Vec<WriteRequest> = big
            .chunks(1 << 20)
            .enumerate()
            .map(|(i, c)| WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: (i << 20) as i64,
                finish_write: (i + 1) << 20 >= big.len(),
                data: c.to_vec(),
            })
            .collect();
        let t = Instant::now();
        bs.write(futures_util::stream::iter(msgs)).await.unwrap();
        let e = t.elapsed();
        if !warm {
            bs_write.samples.push(e);
        }
        let t = Instant::now();
        let mut stream = bs
            .read(ReadRequest {
                resource_name: format!(
                    "{instance}/blobs/{}/{}",
                    big_digest.hash, big_digest.size_bytes
                ),
                read_offset: 0,
                read_limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = stream.next().await {
            n += m.unwrap().data.len();
        }
        let e = t.elapsed();
        assert_eq!(n, big.len());
        if !warm {
            bs_read.samples.push(e);
        }
    }

    println!(
        "kurad REAPI benchmark: {rounds} rounds (after one warm-up), loopback, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9}",
        "operation (ms)", "p50", "p99", "min", "mean"
    );
    row("FindMissingBlobs 10,000 digests (5,000 missing)", &fm);
    row("  HTTP: 10,000 HEAD /bazel/cas, 16 connections", &fm_http);
    row("BatchReadBlobs 1,000 x 4 KiB", &br);
    row("  HTTP: 1,000 GET /bazel/cas, 16 connections", &br_http);
    row("ByteStream.Write 64 MiB (1 MiB messages)", &bs_write);
    row("ByteStream.Read 64 MiB", &bs_read);
    println!();
    println!(
        "FindMissingBlobs: {:.0} digests/s; {:.1}x faster than HTTP HEADs (p50)",
        10_000.0 / (fm.pct(0.5) / 1e3),
        fm_http.pct(0.5) / fm.pct(0.5)
    );
    println!(
        "BatchReadBlobs: {:.0} blobs/s, {:.1} MiB/s; {:.1}x faster than HTTP GETs (p50)",
        1_000.0 / (br.pct(0.5) / 1e3),
        4.0 * 1000.0 / 1024.0 / (br.pct(0.5) / 1e3),
        br_http.pct(0.5) / br.pct(0.5)
    );
    println!(
        "ByteStream 64 MiB: write {:.0} MiB/s, read {:.0} MiB/s (p50)",
        64.0 / (bs_write.pct(0.5) / 1e3),
        64.0 / (bs_read.pct(0.5) / 1e3)
    );
    node.stop().await;
}
