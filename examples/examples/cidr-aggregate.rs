//! Reads CIDRs (or bare addresses) one per line on stdin and prints the
//! aggregated set, one per line, sorted, IPv4 before IPv6.
//!
//! ```text
//! printf '10.0.0.0/25\n10.0.0.128/25\nfd00::1\n' | \
//!     cargo run -q -p kura-examples --example cidr-aggregate
//! ```
//!
//! Blank lines and `#` comments are ignored; a line may also hold several
//! entries separated by commas or spaces. Invalid entries (including ones
//! with host bits set, such as `10.0.0.1/8`) are reported on stderr with their
//! line number, nothing is printed on stdout, and the exit status is 1. With
//! `--clear-host-bits`, host bits are cleared instead, with a warning.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::process::ExitCode;

use kura_netpol::{CidrSet, HostBits, parse_cidr_list};

fn main() -> ExitCode {
    let mut host_bits = HostBits::Reject;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--clear-host-bits" => host_bits = HostBits::Clear,
            "-h" | "--help" => {
                println!("usage: cidr-aggregate [--clear-host-bits] < cidrs.txt");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("cidr-aggregate: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cidr-aggregate: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let mut set = CidrSet::new();
    let mut cidrs = Vec::new();
    let mut failed = false;
    for entry in parse_cidr_list(&input, host_bits) {
        match entry {
            Ok(parsed) => {
                if let Some(address) = parsed.host_bits_cleared_from {
                    eprintln!(
                        "cidr-aggregate: warning: {address}: host bits cleared, using {}",
                        parsed.cidr
                    );
                }
                cidrs.push(parsed.cidr);
            }
            Err(e) => {
                eprintln!("cidr-aggregate: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::from(1);
    }
    set.extend(cidrs);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for cidr in &set.aggregate() {
        if writeln!(out, "{cidr}").is_err() {
            return ExitCode::from(1);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
