//! SIGKILL `kurad` (the real binary) during concurrent PUTs, restart it on the
//! same data directory, and check that every PUT that got a 2xx reads back
//! byte-exact and that the daemon accepts new writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    base: String,
}

fn start(data: &std::path::Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kurad"))
        .args(["--port", "0", "--bind-address", "127.0.0.1", "--data-dir"])
        .arg(data)
        .env("KURA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first stdout line announces the address.
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // Keep draining stdout so the daemon never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Daemon {
        child,
        base: format!("http://{addr}"),
    }
}

fn body_for(i: u64) -> Vec<u8> {
    // Sizes from a few bytes to ~300 KiB, so both inline and file-backed objects.
    let len = (i * 7919) % (300 * 1024) + 1;
    (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut next = 0u64;
    for cycle in 0..5u64 {
        let mut d = start(dir.path());
        // Concurrent writers; kill after a varying amount of progress.
        let target = 20 + cycle * 15;
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let (c, base, acked) = (client.clone(), d.base.clone(), acked.clone());
            let start_i = next + w * 1000;
            tasks.push(tokio::spawn(async move {
                for i in start_i..start_i + 1000 {
                    let r = c
                        .put(format!("{base}/ccache/k{i}"))
                        .body(body_for(i))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => acked.lock().unwrap().push(i),
                        _ => return,
                    }
                }
            }));
        }
        next += 8 * 1000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = acked.lock().unwrap().len() as u64;
        while (acked.lock().unwrap().len() as u64) < before + target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        d.child.kill().unwrap(); // SIGKILL
        d.child.wait().unwrap();
        for t in tasks {
            let _ = t.await;
        }
        // Restart and verify everything acknowledged so far.
        let mut d = start(dir.path());
        let all = acked.lock().unwrap().clone();
        assert!(!all.is_empty());
        for i in &all {
            let r = client
                .get(format!("{}/ccache/k{i}", d.base))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "acknowledged object k{i} lost after SIGKILL in cycle {cycle}"
            );
            assert_eq!(
                r.bytes().await.unwrap().as_ref(),
                body_for(*i).as_slice(),
                "k{i} corrupt"
            );
        }
        let r = client
            .put(format!("{}/ccache/after{cycle}", d.base))
            .body("ok")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut d = start(dir.path());
    let r = client
        .put(format!("{}/cache/k1", d.base))
        .body("persisted")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let status = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kurad did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "exit status {code}");
    let mut d = start(dir.path());
    let r = client
        .get(format!("{}/cache/k1", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "persisted");
    d.child.kill().unwrap();
    d.child.wait().unwrap();
}
