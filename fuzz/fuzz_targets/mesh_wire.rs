//! Arbitrary bytes as peer-protocol input (record header, query key, JSON requests and
//! responses) never panic kura-mesh's parsers; what decodes re-encodes to the same value.
#![no_main]

use kura_mesh::wire::{
    self, BucketRequest, BucketResponse, ListResponse, Status, SummaryRequest, SummaryResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = match data.split_first() {
        Some((s, r)) => (*s, r),
        None => return,
    };
    match selector % 6 {
        0 => {
            if let Ok(rec) = wire::decode_record(rest) {
                let again = wire::decode_record(wire::encode_record(&rec).as_bytes())
                    .expect("re-encoded record decodes");
                assert_eq!(again, rec);
            }
        }
        1 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                if let Ok(k) = wire::decode_key(s) {
                    assert_eq!(
                        wire::decode_key(&wire::encode_key(&k)).expect("round trip"),
                        k
                    );
                }
                let _ = wire::query_param(Some(s), "key");
            }
        }
        2 => {
            let _ = wire::parse_json::<SummaryRequest>("summary", rest);
            let _ = wire::parse_json::<SummaryResponse>("summary", rest);
        }
        3 => {
            if let Ok(b) = wire::parse_json::<BucketResponse>("buckets", rest) {
                for e in b.buckets.iter().flatten() {
                    // What validates re-encodes to the same entry (ghost flag included).
                    if let Ok(entry) = e.to_entry() {
                        let again = wire::WireEntry::from_entry(&entry)
                            .to_entry()
                            .expect("re-encoded entry validates");
                        assert_eq!(again, entry);
                    }
                }
            }
            let _ = wire::parse_json::<BucketRequest>("buckets", rest);
        }
        4 => {
            let _ = wire::parse_json::<Status>("status", rest);
            // Streamed push responses: heartbeats, then one outcome or refusal.
            if let Ok(reply) = wire::parse_push_reply(rest) {
                let json = serde_json::to_vec(&reply).expect("a reply serialises");
                assert_eq!(wire::parse_push_reply(&json).expect("round trip"), reply);
            }
        }
        _ => {
            let _ = wire::parse_json::<ListResponse>("list", rest);
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = wire::parse_hash("hash", s);
                let _ = kura_mesh::PeerUrl::parse(s);
            }
        }
    }
});
