//! Arbitrary strings as ByteStream resource names never panic the parser; an
//! accepted name is already canonical (writing it back gives the same string)
//! and its canonical form parses to the same value.
#![no_main]

use kurad::reapi::resource::{parse_read, parse_write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data).into_owned();
    if let Ok(b) = parse_read(&s) {
        let text = b.to_string();
        assert_eq!(text, s);
        assert_eq!(parse_read(&text).ok(), Some(b));
    }
    if let Ok(w) = parse_write(&s) {
        let text = w.to_string();
        assert_eq!(text, s);
        assert_eq!(parse_write(&text).ok(), Some(w));
    }
});
