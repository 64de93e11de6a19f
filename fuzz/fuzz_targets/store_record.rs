//! Arbitrary bytes as a replicated record (what a peer sends) never panic kura-store, and
//! every record that decodes re-encodes to bytes that decode to the same record.
#![no_main]

use kura_store::ReplicatedRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = ReplicatedRecord::from_bytes(data) {
        let again =
            ReplicatedRecord::from_bytes(&rec.to_bytes()).expect("re-encoded record decodes");
        assert_eq!(again, rec);
    }
});
