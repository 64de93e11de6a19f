//! Arbitrary request sequences never panic the Scaleway simulator.
//!
//! Input: lines `METHOD PATH[?QUERY] [BODY]`, each sent with the right token
//! (lines starting with `!` are sent without it); `+N` advances the clock N s.
#![no_main]

use bytes::Bytes;
use kura_scaleway::sim::Simulator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sim = Simulator::with_token("t");
    for line in text.lines().take(64) {
        if let Some(secs) = line.strip_prefix('+') {
            sim.advance(std::time::Duration::from_secs(
                secs.parse::<u64>().unwrap_or(1).min(86_400),
            ));
            continue;
        }
        let (auth, line) = match line.strip_prefix('!') {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("GET");
        let uri = parts.next().unwrap_or("/");
        let body = parts.next().unwrap_or("").to_owned();
        let mut builder = http::Request::builder().method(method).uri(uri);
        if auth {
            builder = builder.header("x-auth-token", "t");
        }
        let content_type = if uri.contains("user_data/") {
            "text/plain"
        } else {
            "application/json"
        };
        let Ok(req) = builder
            .header("content-type", content_type)
            .body(Bytes::from(body))
        else {
            continue;
        };
        let resp = sim.handle(req);
        assert!(resp.status().as_u16() >= 200 && resp.status().as_u16() < 600);
    }
});
