//! `kurad`: parse configuration, open the store, serve, shut down cleanly.
//! Exit codes: 0 after a clean shutdown, 2 for configuration errors, 1 for
//! runtime failures.
#![allow(clippy::print_stderr, clippy::print_stdout)] // a binary reports to its terminal

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use kurad::config::{Args, Config, LogFormat};
use kurad::{AppState, Server};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.validate() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("kurad: invalid configuration:");
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    let tokens = match &config.auth_tokens_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| kurad::auth::Tokens::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("kurad: invalid configuration:");
                eprintln!(
                    "  KURA_AUTH_TOKENS_FILE (--auth-tokens-file): {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kurad: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, tokens)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kurad: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log collectors get plain text (and the
    // per-request span is cheaper to format without escape codes).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: Config, tokens: Option<kurad::auth::Tokens>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    std::fs::create_dir_all(&config.tmp_dir).with_context(|| {
        format!(
            "cannot create the temporary directory {}",
            config.tmp_dir.display()
        )
    })?;
    let backend = kura_store::FsBackend::open(&config.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let mut store_config = kura_store::Config::default();
    store_config.capacity = config.capacity;
    store_config.durability = config.durability;
    store_config.read_cache_bytes = config.read_cache_bytes;
    store_config.metadata_cache_bytes = config.metadata_cache_bytes;
    store_config.background_writeback = config.background_writeback;
    // Ghosts (evicted objects' summary entries) only matter to a replica; the mesh
    // collects them after KURA_GHOST_TTL_SECS.
    store_config.ghosts = config.mesh.is_some();
    store_config.node = kurad::mesh::node_id(&config.data_dir).with_context(|| {
        format!(
            "cannot read or create {}/node-id",
            config.data_dir.display()
        )
    })?;
    let store = kura_store::Store::open(backend, store_config)
        .await
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let state = AppState::new(store.clone(), config, tokens);
    let server = Server::bind(state.clone())
        .await
        .with_context(|| format!("cannot listen on {}", state.config.listen))?;
    let addr = server.local_addr()?;
    let mesh = match &state.config.mesh {
        None => None,
        Some(settings) => {
            let m = kurad::mesh::start(
                settings,
                store.clone(),
                &state.config,
                std::sync::Arc::new(kura_mesh::SystemResolver),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the replication mesh: {e}"))?;
            let _ = state.mesh.set(m.mesh.clone());
            Some(m)
        }
    };
    let scrubber = state
        .config
        .scrub_rate
        .map(|rate| kurad::scrub::spawn(state.clone(), rate, state.config.scrub_interval));
    print_banner(addr, &state.config);
    if let Some(m) = &mesh {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "kurad peer listener on https://{} (mTLS)", m.addr)
            .and_then(|()| out.flush());
    }
    server.serve(shutdown_signal()).await;
    if let Some(s) = scrubber {
        s.abort();
    }
    if let Some(m) = mesh {
        m.shutdown().await;
    }
    drop(state);
    store
        .close()
        .await
        .context("flushing the store at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints the address and one line per client. Write errors (a closed stdout)
/// are ignored: the banner must never take the daemon down.
fn print_banner(addr: std::net::SocketAddr, config: &Config) {
    use std::io::Write as _;
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let text = format!(
        "kurad listening on http://{addr} (data: {data})\n\
         \x20 gradle:  buildCache {{ remote(HttpBuildCache) {{ url = 'http://{host}/cache/'; push = true }} }}\n\
         \x20 bazel:   --remote_cache=http://{host}/bazel  or  --remote_cache=grpc://{host}{grpc}\n\
         \x20 ccache:  CCACHE_REMOTE_STORAGE='http://{host}/ccache' CCACHE_REMOTE_ONLY=true\n\
         \x20 turbo:   TURBO_API=http://{host} TURBO_TOKEN=<token> TURBO_TEAM=<team>\n\
         \x20 nx:      NX_SELF_HOSTED_REMOTE_CACHE_SERVER=http://{host}\n\
         \x20 sccache: SCCACHE_WEBDAV_ENDPOINT=http://{host}/sccache/\n\
         \x20 other namespaces: http://{host}/ns/<namespace>/… ; metrics: http://{host}/metrics\n",
        data = config.data_dir.display(),
        grpc = config
            .grpc_listen
            .map(|g| format!(" (gRPC only also on port {})", g.port()))
            .unwrap_or_default(),
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("signal received");
}
