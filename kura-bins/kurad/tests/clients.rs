//! Real cache clients against a real `kurad` listener: a cold build stores,
//! a build in a fresh workspace / cache directory gets remote hits.
//!
//! Each test skips with a message when its client is not installed, except
//! under CI (`CI` set), where a missing client fails the test: `.ci/run`
//! installs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TestServer;

fn available(tool: &str, version_arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required under CI (.ci/run installs it)"
        );
        eprintln!("SKIP: {tool} is not installed");
    }
    ok
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ccache_compile(work: &Path, cache_dir: &Path, remote: &str) -> String {
    let out = Command::new("ccache")
        .args(["gcc", "-c", "main.c", "-o", "main.o"])
        .current_dir(work)
        .env("CCACHE_DIR", cache_dir)
        .env("CCACHE_REMOTE_STORAGE", remote)
        .env("CCACHE_REMOTE_ONLY", "true")
        .env("CCACHE_NOHASHDIR", "true")
        .env("CCACHE_BASEDIR", work)
        .output()
        .unwrap();
    check(&out, "ccache gcc");
    let stats = Command::new("ccache")
        .arg("--print-stats")
        .env("CCACHE_DIR", cache_dir)
        .output()
        .unwrap();
    check(&stats, "ccache --print-stats");
    String::from_utf8_lossy(&stats.stdout).into_owned()
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next().and_then(|v| v.parse().ok()))?
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccache_cold_then_remote_hit_from_a_fresh_cache() {
    if !available("ccache", "--version") || !available("gcc", "--version") {
        return;
    }
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.c"),
        "int answer(void) { return 42; }\nint main(void) { return answer() - 42; }\n",
    )
    .unwrap();
    for layout in ["subdirs", "flat", "bazel"] {
        // One namespace per layout, so every layout starts cold.
        let remote = format!(
            "{}|layout={layout}",
            s.url(&format!("/ns/ccache-{layout}/ccache"))
        );
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let wp = work.path().to_path_buf();
        let (ap, bp) = (a.path().to_path_buf(), b.path().to_path_buf());
        let r = remote.clone();
        let cold = tokio::task::spawn_blocking(move || ccache_compile(&wp, &ap, &r))
            .await
            .unwrap();
        assert!(
            stat(&cold, "remote_storage_miss") >= 1,
            "{layout} cold:\n{cold}"
        );
        assert!(
            stat(&cold, "remote_storage_write") >= 1 || stat(&cold, "cache_miss") >= 1,
            "{layout} cold:\n{cold}"
        );
        let wp = work.path().to_path_buf();
        let warm = tokio::task::spawn_blocking(move || ccache_compile(&wp, &bp, &remote))
            .await
            .unwrap();
        assert!(
            stat(&warm, "remote_storage_hit") >= 1,
            "{layout} warm (fresh cache dir):\n{warm}"
        );
        assert_eq!(stat(&warm, "remote_storage_error"), 0, "{layout}:\n{warm}");
    }
    assert!(s.state.store.stats().objects >= 3);
    s.stop().await;
}

/// A running sccache server (its own `SCCACHE_DIR` and port) that is stopped
/// when dropped, so a failing assertion does not leave a daemon behind.
struct Sccache {
    dir: tempfile::TempDir,
    port: u16,
    endpoint: String,
}

impl Sccache {
    fn start(endpoint: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
            port,
            endpoint: endpoint.to_owned(),
        };
        let out = s.command().arg("--start-server").output().unwrap();
        check(&out, "sccache --start-server");
        s
    }

    fn command(&self) -> Command {
        let mut c = Command::new("sccache");
        c.env("SCCACHE_DIR", self.dir.path())
            .env("SCCACHE_SERVER_PORT", self.port.to_string())
            .env("SCCACHE_WEBDAV_ENDPOINT", &self.endpoint)
            .env("SCCACHE_IDLE_TIMEOUT", "0")
            .env_remove("SCCACHE_LOG")
            .env_remove("RUSTC_WRAPPER");
        c
    }

    /// Compiles `main.c` in `work`, then returns `--show-stats` as JSON.
    fn compile(&self, work: &Path) -> serde_json::Value {
        let out = self
            .command()
            .args(["gcc", "-c", "main.c", "-o", "main.o"])
            .current_dir(work)
            .output()
            .unwrap();
        check(&out, "sccache gcc");
        let stats = self
            .command()
            .args(["--show-stats", "--stats-format", "json"])
            .output()
            .unwrap();
        check(&stats, "sccache --show-stats");
        serde_json::from_slice(&stats.stdout).unwrap()
    }
}

impl Drop for Sccache {
    fn drop(&mut self) {
        let _ = self.command().arg("--stop-server").output();
    }
}

fn sccache_count(stats: &serde_json::Value, field: &str) -> u64 {
    let v = &stats["stats"][field];
    v.as_u64().unwrap_or_else(|| {
        v["counts"].as_object().map_or(0, |m| {
            m.values().filter_map(serde_json::Value::as_u64).sum()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sccache_webdav_cold_then_remote_hit_from_a_fresh_server() {
    if !available("sccache", "--version") || !available("gcc", "--version") {
        return;
    }
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.c"),
        "int answer(void) { return 42; }\nint main(void) { return answer() - 42; }\n",
    )
    .unwrap();
    // The default mount point and another namespace's.
    for (mount, ns) in [
        ("/sccache/", "default"),
        ("/ns/sccache-ns/sccache/", "sccache-ns"),
    ] {
        let endpoint = s.url(mount);
        let wp = work.path().to_path_buf();
        let cold = tokio::task::spawn_blocking(move || {
            let c = Sccache::start(&endpoint);
            let stats = c.compile(&wp);
            (stats, endpoint)
        })
        .await
        .unwrap();
        let (cold, endpoint) = cold;
        assert_eq!(
            sccache_count(&cold, "cache_misses"),
            1,
            "{mount} cold: {cold}"
        );
        assert_eq!(
            sccache_count(&cold, "cache_writes"),
            1,
            "{mount} cold: {cold}"
        );
        assert_eq!(sccache_count(&cold, "cache_write_errors"), 0, "{cold}");
        assert_eq!(sccache_count(&cold, "cache_errors"), 0, "{cold}");
        let ns_id = kura_store::NamespaceId::new(
            s.state.config.account.clone(),
            kura_store::Namespace::new(ns).unwrap(),
        );
        let stored = s.state.store.list(&ns_id, None, 100).unwrap();
        assert!(
            stored
                .iter()
                .filter(|m| m.id.key.as_str().starts_with("sccache/"))
                .count()
                >= 2,
            "{mount}: the check file and the compilation result are stored: {stored:?}"
        );
        // A new sccache server with an empty local directory: a remote hit.
        let wp = work.path().to_path_buf();
        std::fs::remove_file(work.path().join("main.o")).unwrap();
        let warm = tokio::task::spawn_blocking(move || Sccache::start(&endpoint).compile(&wp))
            .await
            .unwrap();
        assert_eq!(
            sccache_count(&warm, "cache_hits"),
            1,
            "{mount} warm: {warm}"
        );
        assert_eq!(
            sccache_count(&warm, "cache_misses"),
            0,
            "{mount} warm: {warm}"
        );
        assert!(work.path().join("main.o").exists());
    }
    s.stop().await;
}

/// Where `.ci/run` installs the npm clients (`npm install --prefix DIR turbo nx`).
fn npm_tools() -> std::path::PathBuf {
    std::env::var_os("KURA_NPM_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm-tools"),
        std::path::PathBuf::from,
    )
}

fn npm_bin(name: &str) -> Option<std::path::PathBuf> {
    let p = npm_tools().join("node_modules/.bin").join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is required under CI (.ci/run installs it with npm)",
        p.display()
    );
    eprintln!(
        "SKIP: {} not found (npm install --prefix target/npm-tools turbo@2 nx@21)",
        p.display()
    );
    None
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turbo_cold_then_remote_hit_from_a_fresh_cache() {
    let Some(turbo) = npm_bin("turbo") else {
        return;
    };
    let s = TestServer::start().await;
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    write(
        &r.join("package.json"),
        r#"{"name":"root","private":true,"packageManager":"npm@10.0.0","workspaces":["packages/*"]}"#,
    );
    write(
        &r.join("turbo.json"),
        r#"{"tasks":{"build":{"inputs":["package.json"],"outputs":["dist/**"]}}}"#,
    );
    write(
        &r.join("packages/a/package.json"),
        r#"{"name":"a","version":"1.0.0","scripts":{"build":"mkdir -p dist && echo built-by-turbo > dist/out.txt"}}"#,
    );
    let caches = tempfile::tempdir().unwrap();
    let run = |cache: &str| {
        let out = Command::new(&turbo)
            .args(["run", "build", "--cache-dir"])
            .arg(caches.path().join(cache))
            .current_dir(r)
            .env("TURBO_API", s.url(""))
            .env("TURBO_TOKEN", "secret")
            .env("TURBO_TEAM", "myteam")
            .env("TURBO_TELEMETRY_DISABLED", "1")
            .env("DO_NOT_TRACK", "1")
            .output()
            .unwrap();
        check(&out, "turbo run build");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cold = tokio::task::block_in_place(|| run("a"));
    assert!(cold.contains("cache miss"), "{cold}");
    std::fs::remove_dir_all(r.join("packages/a/dist")).unwrap();
    let warm = tokio::task::block_in_place(|| run("b"));
    assert!(
        warm.contains("cache hit") && warm.contains("1 cached, 1 total"),
        "{warm}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("packages/a/dist/out.txt"))
            .unwrap()
            .trim(),
        "built-by-turbo",
        "outputs restored from kurad"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nx_cold_then_remote_hit_from_a_fresh_cache() {
    let Some(nx) = npm_bin("nx") else {
        return;
    };
    let s = TestServer::start().await;
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    write(&r.join("package.json"), r#"{"name":"nxw","private":true}"#);
    write(
        &r.join("nx.json"),
        r#"{"targetDefaults":{"build":{"cache":true,"outputs":["{projectRoot}/dist"]}}}"#,
    );
    write(
        &r.join("libs/a/project.json"),
        r#"{"name":"a","targets":{"build":{"executor":"nx:run-commands","options":{"command":"mkdir -p libs/a/dist && echo built-by-nx > libs/a/dist/out.txt"}}}}"#,
    );
    std::os::unix::fs::symlink(npm_tools().join("node_modules"), r.join("node_modules")).unwrap();
    let caches = tempfile::tempdir().unwrap();
    let run = |cache: &str| {
        let out = Command::new(&nx)
            .args(["run", "a:build", "--outputStyle=static"])
            .current_dir(r)
            .env("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", s.url(""))
            .env("NX_CACHE_DIRECTORY", caches.path().join(cache))
            .env("NX_DAEMON", "false")
            .env("NX_NO_CLOUD", "true")
            .env("NX_TUI", "false")
            .output()
            .unwrap();
        check(&out, "nx run a:build");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cold = tokio::task::block_in_place(|| run("a"));
    assert!(!cold.contains("[remote cache]"), "{cold}");
    std::fs::remove_dir_all(r.join("libs/a/dist")).unwrap();
    // Nx keeps a workspace-local cache too; a fresh checkout has none.
    let _ = std::fs::remove_dir_all(r.join(".nx"));
    let warm = tokio::task::block_in_place(|| run("b"));
    assert!(warm.contains("[remote cache]"), "{warm}");
    assert_eq!(
        std::fs::read_to_string(r.join("libs/a/dist/out.txt"))
            .unwrap()
            .trim(),
        "built-by-nx"
    );
    s.stop().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradle_cold_then_from_cache_in_a_fresh_checkout() {
    if !available("gradle", "--version") {
        return;
    }
    let s = TestServer::start().await;
    let src = tempfile::tempdir().unwrap();
    let p = src.path();
    // Gradle 4.4.1 needs the trailing slash; no --offline (it disables the remote cache).
    write(
        &p.join("settings.gradle"),
        &format!(
            "rootProject.name = 'demo'\nbuildCache {{\n  local {{ enabled = false }}\n  remote(HttpBuildCache) {{\n    url = '{}'\n    push = true\n    if (delegate.hasProperty('allowInsecureProtocol')) {{ allowInsecureProtocol = true }}\n  }}\n}}\n",
            s.url("/ns/gradle-e2e/cache/")
        ),
    );
    write(&p.join("build.gradle"), "apply plugin: 'java'\n");
    write(
        &p.join("src/main/java/demo/Hello.java"),
        "package demo;\npublic class Hello { public static String hi() { return \"hi\"; } }\n",
    );
    let checkouts = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let dir = checkouts.path().join(name);
        copy_dir(p, &dir);
        let out = Command::new("gradle")
            .args([
                "--no-daemon",
                "--build-cache",
                "--console=plain",
                "compileJava",
            ])
            .current_dir(&dir)
            .env(
                "GRADLE_USER_HOME",
                checkouts.path().join(format!("{name}-home")),
            )
            .output()
            .unwrap();
        check(&out, "gradle compileJava");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cold = tokio::task::block_in_place(|| run("a"));
    assert!(
        cold.contains(":compileJava") && !cold.contains("FROM-CACHE"),
        "{cold}"
    );
    let warm = tokio::task::block_in_place(|| run("b"));
    assert!(warm.contains(":compileJava FROM-CACHE"), "{warm}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazel_cold_then_remote_cache_hit_in_a_fresh_workspace() {
    if !available("bazel", "--version") {
        return;
    }
    let s = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let ws = root.path().join(name);
        write(&ws.join("WORKSPACE"), "");
        write(
            &ws.join("BUILD"),
            "genrule(name = \"gen\", outs = [\"out.txt\"], cmd = \"echo hello-from-bazel > $@\")\n",
        );
        let out = Command::new("bazel")
            .arg(format!(
                "--output_user_root={}",
                root.path().join(format!("{name}-out")).display()
            ))
            .args(["--batch", "build", "//:gen", "--noshow_progress"])
            .arg(format!("--remote_cache={}", s.url("/bazel")))
            .current_dir(&ws)
            .output()
            .unwrap();
        check(&out, "bazel build");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let produced = std::fs::read_to_string(ws.join("bazel-bin/out.txt")).unwrap();
        assert_eq!(produced.trim(), "hello-from-bazel");
        text
    };
    let cold = tokio::task::block_in_place(|| run("a"));
    assert!(!cold.contains("remote cache hit"), "{cold}");
    let warm = tokio::task::block_in_place(|| run("b"));
    assert!(warm.contains("1 remote cache hit"), "{warm}");
    // The action-cache entry references the CAS blob it names.
    let refs: usize = s
        .state
        .store
        .list(
            &kura_store::NamespaceId::new(
                kura_store::Account::new("local").unwrap(),
                kura_store::Namespace::new("default").unwrap(),
            ),
            None,
            1000,
        )
        .unwrap()
        .iter()
        .filter(|m| m.id.key.as_str().starts_with("ac/"))
        .map(|m| m.refs.len())
        .sum();
    assert!(refs >= 1, "AC entries reference their outputs");
    s.stop().await;
}
