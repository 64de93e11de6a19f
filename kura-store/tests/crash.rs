//! Crash test with real processes.
//!
//! The test binary re-executes itself as a child (`--child DIR CYCLE`) that writes and
//! deletes objects from 8 concurrent tasks and prints `ACK`/`DEL` lines after each
//! acknowledged operation (and `BEGIN-DEL` before a delete). The parent SIGKILLs the child
//! after a seeded-random number of acknowledgements, reopens the store and checks that every
//! acknowledged object reads back byte-exact (checksum verified), that acknowledged deletes
//! stayed deleted, that every visible object of the cycle is complete, that no temporary
//! file survives recovery, and that the store accepts new writes. After each cycle the parent
//! evicts half of the store, turning objects into ghosts; the next child overwrites and
//! deletes some of those ghosts (previous cycle's keys) in redo-logged batches, so recovery
//! replays writes over ghosts, and the digest summary must still equal the XOR of its
//! entries (`Store::verify_summary`). 20 cycles by default
//! (`KURA_CRASH_CYCLES`, `KURA_CRASH_SEED` override for reproduction).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kura_store::{Config, FsBackend, ObjectId, PutRequest, Store, body_from_bytes};

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key_seed(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Size and content are functions of the key, so the parent can check without being told.
fn content(key: &str) -> Vec<u8> {
    let mut s = key_seed(key);
    let r = splitmix(&mut s);
    let len = if r % 100 < 15 {
        65 * 1024 + (r >> 8) as usize % (96 * 1024)
    } else {
        (r >> 8) as usize % 8192
    };
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn id(cycle: u64, key: &str) -> ObjectId {
    ObjectId::parse("crash", &format!("cycle{cycle}"), key).unwrap()
}

fn child(dir: &str, cycle: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Odd cycles run with the background writeback of the metadata file.
        let mut cfg = Config::default();
        cfg.background_writeback = cycle % 2 == 1;
        let store = Store::open(FsBackend::open(dir).unwrap(), cfg)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000u64 {
                    let key = format!("w{w}-{i}");
                    let data = content(&key);
                    let len = data.len() as u64;
                    store
                        .put(
                            PutRequest::new(id(cycle, &key)).with_len(len),
                            body_from_bytes(data),
                        )
                        .await
                        .unwrap();
                    say(&format!("ACK {key}\n"));
                    // Writes over the previous cycle's keys (half of them ghosts).
                    if cycle > 0 && i % 5 == 0 {
                        let old = id(cycle - 1, &key);
                        if i % 10 == 0 {
                            store.delete(&old).await.unwrap();
                        } else {
                            store.put_bytes(old, content(&key)).await.unwrap();
                        }
                    }
                    if i % 7 == 6 {
                        let victim = format!("w{w}-{}", i - 3);
                        say(&format!("BEGIN-DEL {victim}\n"));
                        store.delete(&id(cycle, &victim)).await.unwrap();
                        say(&format!("DEL {victim}\n"));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], args[3].parse().unwrap());
        return;
    }
    let cycles: u64 = std::env::var("KURA_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::env::var("KURA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b75_7261);
    println!("running crash test: {cycles} SIGKILL cycles, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut total_acks = 0;
    let mut total_replayed = 0;
    for cycle in 0..cycles {
        let kill_after = 1 + splitmix(&mut seed) % 150;
        let (acks, replayed) = run_cycle(dir.path(), cycle, kill_after, &rt);
        total_acks += acks;
        total_replayed += replayed;
    }
    println!(
        "crash test: {cycles} cycles, {total_acks} acknowledged operations verified in {:.1}s, {total_replayed} redo-log batches replayed",
        started.elapsed().as_secs_f64()
    );
    // Kills land between checkpoints, so recovery must have used the redo log (the
    // durability point of `Durability::Always` puts) rather than found everything in redb.
    assert!(
        cycles < 5 || total_replayed > 0,
        "no cycle exercised redo-log recovery"
    );
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}

fn run_cycle(dir: &Path, cycle: u64, kill_after: u64, rt: &tokio::runtime::Runtime) -> (u64, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(dir)
        .arg(cycle.to_string())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acked: BTreeSet<String> = BTreeSet::new();
    // key -> delete acknowledged?
    let mut deletes: BTreeMap<String, bool> = BTreeMap::new();
    let mut n = 0;
    let mut killed = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let r = out.read_until(b'\n', &mut line).unwrap();
        if r == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            break; // torn final line: not an acknowledgement
        }
        let s = std::str::from_utf8(&line[..line.len() - 1]).unwrap();
        match s.split_once(' ') {
            Some(("ACK", k)) => {
                acked.insert(k.to_string());
                n += 1;
            }
            Some(("BEGIN-DEL", k)) => {
                deletes.insert(k.to_string(), false);
            }
            Some(("DEL", k)) => {
                deletes.insert(k.to_string(), true);
                n += 1;
            }
            _ => panic!("unexpected child output {s:?}"),
        }
        if !killed && n >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "child exited on its own: {status:?}");
    let replayed = rt.block_on(async {
        let store = Store::open(FsBackend::open(dir).unwrap(), Config::default())
            .await
            .unwrap();
        let replayed = store.stats().recovered_batches;
        store.verify_summary().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "temporary files survived recovery"
        );
        for k in &acked {
            let oid = id(cycle, k);
            match deletes.get(k) {
                Some(true) => {
                    assert!(
                        store.head(&oid).unwrap().is_none(),
                        "acknowledged delete of {k} lost"
                    );
                    continue;
                }
                Some(false) => {} // delete in flight: either state is fine
                None => assert!(
                    store.head(&oid).unwrap().is_some(),
                    "cycle {cycle}: acknowledged object {k} lost"
                ),
            }
        }
        // Every visible object of this cycle is complete and verified, acknowledged or not.
        let ns = id(cycle, "x").namespace_id();
        let mut after = None;
        let mut visible = 0;
        loop {
            let page = store.list(&ns, after.as_ref(), 256).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.key.clone());
            for meta in page {
                let k = meta.id.key.as_str().to_string();
                let obj = store.get(&meta.id).await.unwrap().unwrap();
                let got = obj.read_all().await.unwrap();
                assert_eq!(got.as_ref(), content(&k).as_slice(), "partial object {k}");
                visible += 1;
            }
        }
        assert!(visible as u64 + 8 >= acked.len() as u64 - deletes.len() as u64);
        // The store takes new writes.
        let post = id(cycle, "post-crash");
        store
            .put_bytes(post.clone(), vec![9u8; 100_000])
            .await
            .unwrap();
        let back = store
            .get(&post)
            .await
            .unwrap()
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert_eq!(back.as_ref(), vec![9u8; 100_000].as_slice());
        // Ghosts for the next cycle to write over.
        store.evict_to(store.stats().bytes / 2).await.unwrap();
        assert!(store.stats().ghosts > 0);
        store.verify_summary().unwrap();
        store.close().await.unwrap();
        replayed
    });
    (n, replayed)
}
