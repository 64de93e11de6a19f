//! Property tests for every parser that sees client input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use base64::Engine;
use kurad::app::TurboMeta;
use kurad::auth::Tokens;
use kurad::body::{RangeRequest, parse_range};
use kurad::keys;
use proptest::prelude::*;

fn model_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn segment_matches_its_grammar(s in "[a-zA-Z0-9._/%-]{0,20}|.{0,20}") {
        prop_assert_eq!(keys::segment(&s).is_ok(), model_segment_ok(&s));
    }

    #[test]
    fn ccache_subdirs_and_flat_name_the_same_key(k in "[0-9a-v]{33}") {
        let flat = keys::ccache_key(&k).unwrap();
        let subdirs = keys::ccache_key(&format!("{}/{}", &k[..2], &k[2..])).unwrap();
        prop_assert_eq!(&flat, &subdirs);
        prop_assert!(!flat.contains('/'));
    }

    #[test]
    fn ccache_paths_never_escape(segs in prop::collection::vec("[a-z.]{0,3}", 1..5)) {
        let path = segs.join("/");
        match keys::ccache_key(&path) {
            Ok(k) => {
                prop_assert!(segs.iter().all(|s| model_segment_ok(s)));
                prop_assert!(!k.contains('/') && !k.starts_with('.'));
            }
            Err(_) => prop_assert!(segs.iter().any(|s| !model_segment_ok(s))),
        }
    }

    #[test]
    fn ranges_stay_in_bounds(a in 0u64..200, b in 0u64..200, suffix in any::<bool>(), open in any::<bool>(), len in 0u64..150) {
        let header = match (suffix, open) {
            (true, _) => format!("bytes=-{b}"),
            (false, true) => format!("bytes={a}-"),
            (false, false) => format!("bytes={a}-{b}"),
        };
        match parse_range(Some(&header), len) {
            RangeRequest::Partial(s, e) => {
                prop_assert!(s < e && e <= len, "{header} len={len} -> {s}..{e}");
                if !suffix { prop_assert_eq!(s, a); }
                if suffix { prop_assert_eq!(e - s, b.min(len)); }
                if !suffix && !open { prop_assert_eq!(e, (b + 1).min(len)); }
            }
            RangeRequest::Unsatisfiable => {
                prop_assert!(len == 0 || (suffix && b == 0) || (!suffix && a >= len), "{header} len={len}");
            }
            RangeRequest::Full => prop_assert!(!suffix && !open && b < a, "{header} len={len}"),
        }
    }

    #[test]
    fn turbo_meta_round_trips(d in any::<Option<u64>>(), tag in any::<Option<String>>(), team in any::<Option<String>>()) {
        let m = TurboMeta { duration: d, tag, team };
        prop_assert_eq!(TurboMeta::from_content_type(&m.to_content_type()), m);
    }

    #[test]
    fn basic_credentials_decode_in_both_alphabets(user in "[a-z]{0,8}", pass in "[ -~]{1,24}") {
        prop_assume!(!pass.contains(':'));
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let header = format!("Basic {}", engine.encode(format!("{user}:{pass}")));
            prop_assert_eq!(Tokens::token_from_header(&header), Some(pass.clone()));
        }
    }

    #[test]
    fn action_result_walker_is_total(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = kurad::ac::action_result_digests(&data);
    }

    #[test]
    fn size_parser_is_total_and_exact(n in 0u64..1_000_000, unit in prop::sample::select(vec!["", "K", "M", "G", "Ki", "Mi", "Gi", "KiB", "GB"])) {
        let mult: u64 = match unit {
            "" => 1, "K" => 1000, "M" => 1_000_000, "G" | "GB" => 1_000_000_000,
            "Ki" | "KiB" => 1024, "Mi" => 1 << 20, _ => 1 << 30,
        };
        prop_assert_eq!(kurad::config::parse_bytes(&format!("{n}{unit}")), Ok(n * mult));
    }
}
