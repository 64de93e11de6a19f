//! Shared test helpers: golden files and kubernetes-validate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    dead_code,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TOOL: &str = "kubernetes-validate";

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares `actual` with the golden file, or rewrites it under `KURA_BLESS=1`.
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("KURA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with KURA_BLESS=1 cargo test -p kura-operator",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} drifted from the code; review and regenerate with KURA_BLESS=1 cargo test -p kura-operator\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// The Kubernetes version k8s-openapi was built for.
#[allow(unused_assignments)]
pub fn kubernetes_version() -> &'static str {
    let mut version = "1.33.0";
    k8s_openapi::k8s_if_1_34! { version = "1.34.0"; }
    k8s_openapi::k8s_if_1_35! { version = "1.35.0"; }
    k8s_openapi::k8s_if_1_36! { version = "1.36.0"; }
    k8s_openapi::k8s_if_1_37! { version = "1.37.0"; }
    version
}

/// Whether kubernetes-validate is installed; panics under CI when it is not.
pub fn tool_available() -> bool {
    match Command::new(TOOL).arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => {
            panic!("{TOOL} is not installed; CI must install it (pip install kubernetes-validate)")
        }
        _ => {
            eprintln!("SKIPPED: {TOOL} not found (pip install kubernetes-validate)");
            false
        }
    }
}

/// Runs kubernetes-validate --strict over `files`; asserts success and that
/// every document was checked against a schema. Returns the report.
pub fn validate(files: &[PathBuf], expected_resources: usize) -> String {
    let out = Command::new(TOOL)
        .args(["--strict", "--kubernetes-version", kubernetes_version()])
        .args(files)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{TOOL} failed:\n{report}");
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed, expected_resources,
        "not every document was validated:\n{report}"
    );
    report
}
