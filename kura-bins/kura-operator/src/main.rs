//! `kura-operator`: the KuraInstance controller binary (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kura_operator::manifests;
use kura_operator::render::{LiveObjects, RenderOptions, render};

#[derive(Parser)]
#[command(name = "kura-operator", version, about = "The KuraInstance controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the KuraInstance CustomResourceDefinition (YAML).
    Crd,
    /// Print the ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding (YAML).
    Rbac {
        /// Namespace the operator runs in and watches.
        #[arg(long, env = "KURA_OPERATOR_NAMESPACE", default_value = manifests::DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Print the operator Deployment (YAML).
    Deployment {
        /// Namespace the operator runs in and watches.
        #[arg(long, env = "KURA_OPERATOR_NAMESPACE", default_value = manifests::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Operator image.
        #[arg(long, env = "KURA_OPERATOR_IMAGE", default_value = manifests::DEFAULT_IMAGE)]
        image: String,
    },
    /// Run the controller against the cluster of the kubeconfig (or in-cluster config).
    Run {
        /// Namespace the operator watches.
        #[arg(long, env = "KURA_OPERATOR_NAMESPACE", default_value = manifests::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Address of the health (and endpoint hand-off) server.
        #[arg(long, env = "KURA_OPERATOR_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Serve `GET /v1/endpoints/{account}?platform=` (endpoint hand-off).
        #[arg(long, env = "KURA_OPERATOR_SERVE_ENDPOINTS", default_value_t = false)]
        serve_endpoints: bool,
        /// `app.kubernetes.io/managed-by` label value.
        #[arg(long, env = "KURA_OPERATOR_MANAGED_BY", default_value = kura_operator::render::DEFAULT_MANAGED_BY)]
        managed_by: String,
        /// Name of the operator pod (reported on events).
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// Log filter (tracing-subscriber syntax).
        #[arg(long, env = "KURA_OPERATOR_LOG", default_value = "info")]
        log: String,
    },
    /// Print every object the reconciler would apply for a KuraInstance (dry run).
    Render {
        /// The KuraInstance manifest.
        #[arg(short = 'f', long = "file", env = "KURA_OPERATOR_RENDER_FILE")]
        file: PathBuf,
        /// Directory of YAML files of live objects (any number of documents each).
        #[arg(long, env = "KURA_OPERATOR_RENDER_LIVE")]
        live: Option<PathBuf>,
        /// Namespace used when the manifest has none.
        #[arg(long, env = "KURA_OPERATOR_NAMESPACE", default_value = manifests::DEFAULT_NAMESPACE)]
        namespace: String,
        /// `app.kubernetes.io/managed-by` label value.
        #[arg(long, env = "KURA_OPERATOR_MANAGED_BY", default_value = kura_operator::render::DEFAULT_MANAGED_BY)]
        managed_by: String,
    },
}

fn read_yaml_documents(path: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

async fn run_controller(
    namespace: String,
    listen: std::net::SocketAddr,
    serve_endpoints: bool,
    managed_by: String,
    pod_name: Option<String>,
) -> anyhow::Result<()> {
    use kura_operator::endpoints::{EndpointState, app};
    use kura_operator::primary::HttpRoutability;
    use kura_operator::reconcile::{Context, run};
    use std::sync::{Arc, Mutex};

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (kubeconfig or in-cluster service account)")?;
    let probe_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let routability = Arc::new(HttpRoutability::new(
        probe_client,
        kura_operator::render::HTTP_PORT as u16,
        std::time::Duration::from_secs(2),
    ));
    let mut ctx = Context::new(client, routability, pod_name);
    ctx.options.managed_by = managed_by;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, serve_endpoints, %namespace, "kura-operator starting");
    let store_slot: Arc<
        Mutex<Option<kube::runtime::reflector::Store<kura_operator::crd::KuraInstance>>>,
    > = Arc::default();
    let reader = store_slot.clone();
    let state = EndpointState {
        instances: Arc::new(move || {
            reader
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.state()))
                .unwrap_or_default()
        }),
        clock: Arc::new(kura_ca::time::OffsetDateTime::now_utc),
    };
    let server =
        tokio::spawn(async move { axum::serve(listener, app(state, serve_endpoints)).await });
    run(Arc::new(ctx), &namespace, |store| {
        if let Ok(mut slot) = store_slot.lock() {
            *slot = Some(store);
        }
    })
    .await;
    server.abort();
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let text = match cli.command {
        Command::Run {
            namespace,
            listen,
            serve_endpoints,
            managed_by,
            pod_name,
            log,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).context("--log")?)
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(run_controller(
                namespace,
                listen,
                serve_endpoints,
                managed_by,
                pod_name,
            ))?;
            return Ok(());
        }
        Command::Crd => manifests::crd_yaml()?,
        Command::Rbac { namespace } => manifests::rbac_yaml(&namespace)?,
        Command::Deployment { namespace, image } => manifests::deployment_yaml(&namespace, &image)?,
        Command::Render {
            file,
            live,
            namespace,
            managed_by,
        } => {
            let mut docs = read_yaml_documents(&file)?;
            anyhow::ensure!(
                docs.len() == 1,
                "{} must hold exactly one KuraInstance",
                file.display()
            );
            let mut instance: kura_operator::crd::KuraInstance =
                serde_json::from_value(docs.remove(0))
                    .with_context(|| format!("{} is not a KuraInstance", file.display()))?;
            if instance.metadata.namespace.is_none() {
                instance.metadata.namespace = Some(namespace);
            }
            let mut objects = Vec::new();
            if let Some(dir) = live {
                let mut paths: Vec<_> = std::fs::read_dir(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                    })
                    .collect();
                paths.sort();
                for path in paths {
                    objects.extend(read_yaml_documents(&path)?);
                }
            }
            let live = LiveObjects::from_dynamic(&instance, objects)?;
            let options = RenderOptions {
                managed_by,
                ..RenderOptions::default()
            };
            let rendered = render(
                &instance,
                &live,
                None,
                &options,
                kura_ca::time::OffsetDateTime::now_utc(),
            )?;
            rendered.to_yaml_stream()?
        }
    };
    use std::io::Write;
    stdout.write_all(text.as_bytes())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("kura-operator: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}
