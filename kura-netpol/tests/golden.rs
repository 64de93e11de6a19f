//! Golden files for every rendering: a test fails when the output drifts.
//!
//! Regenerate after an intended change with
//! `KURA_BLESS=1 cargo test -p kura-netpol --test golden` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;

#[test]
fn golden_files_match_the_renderers() {
    let dir = common::golden_dir();
    let bless = std::env::var_os("KURA_BLESS").is_some_and(|v| v == "1");
    let mut drifted = Vec::new();
    let cases = common::cases();
    for (name, _, rendered) in &cases {
        let path = dir.join(name);
        if bless {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, rendered).unwrap();
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(committed) if committed == *rendered => {}
            Ok(committed) => drifted.push(format!(
                "{name} drifted.\n--- committed\n{committed}\n--- rendered\n{rendered}"
            )),
            Err(e) => drifted.push(format!("{name}: cannot read {}: {e}", path.display())),
        }
    }
    // No stray golden files that no case renders any more.
    for entry in fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if !cases.iter().any(|(name, _, _)| *name == file) {
            drifted.push(format!("{file}: golden file without a rendering case"));
        }
    }
    assert!(
        drifted.is_empty(),
        "{}\n\nIf the change is intended, run `KURA_BLESS=1 cargo test -p kura-netpol --test golden` and commit the files.",
        drifted.join("\n\n")
    );
}
