//! Aggregation of 1,000,000 random IPv4 prefixes (/16 to /32) with
//! `CidrSet::aggregate`, against Python's `ipaddress.collapse_addresses` on the
//! same input in the same run.
//!
//! Run: `cargo bench -p kura-netpol --bench aggregate`. The input size can be
//! changed with `KURA_NETPOL_BENCH_PREFIXES`. Python times only the collapse
//! (not reading the file or building the network objects); Rust times set
//! construction (sort + dedup) plus aggregation from already-parsed prefixes,
//! so both measure the same work. The two outputs are compared for equality.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use kura_netpol::ipnet::{IpNet, Ipv4Net};
use kura_netpol::{Cidr, CidrSet, HostBits, parse_cidr_list};

const PYTHON: &str = r#"
import ipaddress, sys, time
with open(sys.argv[1]) as f:
    nets = [ipaddress.IPv4Network(line.strip()) for line in f if line.strip()]
start = time.perf_counter()
collapsed = list(ipaddress.collapse_addresses(nets))
elapsed = time.perf_counter() - start
with open(sys.argv[2], "w") as f:
    f.write("\n".join(str(n) for n in collapsed))
    f.write("\n")
print(elapsed)
"#;

/// splitmix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let count: usize = std::env::var("KURA_NETPOL_BENCH_PREFIXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = Rng(0x6b75_7261);
    let prefixes: Vec<Cidr> = (0..count)
        .map(|_| {
            let r = rng.next();
            let len = 16 + (r >> 32) as u8 % 17;
            let net = Ipv4Net::new(Ipv4Addr::from(r as u32), len).unwrap();
            Cidr::from_net_clearing_host_bits(IpNet::V4(net))
        })
        .collect();
    let mut text = String::with_capacity(count * 19);
    for p in &prefixes {
        writeln!(text, "{p}").unwrap();
    }

    // Parsing, for reference (not part of the comparison).
    let start = Instant::now();
    let parsed: Vec<Cidr> = parse_cidr_list(&text, HostBits::Reject)
        .map(|r| r.unwrap().cidr)
        .collect();
    let parse_time = start.elapsed();
    assert_eq!(parsed, prefixes);

    // Rust: median of 5 runs.
    let mut samples = Vec::new();
    let mut aggregated = CidrSet::new();
    for _ in 0..5 {
        let input = prefixes.clone();
        let start = Instant::now();
        aggregated = black_box(input.into_iter().collect::<CidrSet>().aggregate());
        samples.push(start.elapsed());
    }
    let rust = median(samples);
    println!(
        "input: {count} random IPv4 prefixes /16-/32, {} after aggregation",
        aggregated.len()
    );
    println!(
        "kura-netpol parse_cidr_list:     {:>10.1} ms",
        parse_time.as_secs_f64() * 1e3
    );
    println!(
        "kura-netpol CidrSet::aggregate:  {:>10.1} ms (median of 5)",
        rust.as_secs_f64() * 1e3
    );

    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("prefixes.txt");
    let output_path = dir.path().join("collapsed.txt");
    std::fs::File::create(&input_path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = match Command::new("python3")
        .args(["-c", PYTHON])
        .arg(&input_path)
        .arg(&output_path)
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!("python3 failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            println!("python3 not available ({e}); skipping the comparison");
            return;
        }
    };
    let python_secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let collapsed = std::fs::read_to_string(&output_path).unwrap();
    let python_set = CidrSet::parse_list(&collapsed, HostBits::Reject).unwrap();
    assert_eq!(
        python_set, aggregated,
        "Rust and Python disagree on the aggregate"
    );
    println!(
        "python3 ipaddress.collapse_addresses: {:>10.1} ms",
        python_secs * 1e3
    );
    println!(
        "ratio: kura-netpol is {:.1}x faster (same output, {} networks)",
        python_secs / rust.as_secs_f64(),
        aggregated.len()
    );
}
