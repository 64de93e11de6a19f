//! `kura-provider`: parse flags, wire the library, map errors to exit codes.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::response::IntoResponse as _;
use clap::{Parser, Subcommand};
use kura_provider::cloudinit::{JoinParams, KubernetesMinor, parse_taint, render_cloud_init};
use kura_provider::context::{Context, Metrics, OpenSsh, ProviderConfig, SystemClock};

#[derive(Parser)]
#[command(
    name = "kura-provider",
    version,
    about = "Cluster API provider for Kura cache nodes on Scaleway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions.
    Crds,
    /// Print least-privilege RBAC (ServiceAccount, roles, bindings).
    Rbac {
        /// Namespace the provider runs in.
        #[arg(long, env = "KURA_PROVIDER_NAMESPACE", default_value = "kura-system")]
        namespace: String,
    },
    /// Print the cloud-init document that joins an Instance node.
    RenderCloudInit {
        /// Node name.
        #[arg(long, env = "KURA_NODE_NAME")]
        node_name: String,
        /// Taint `key=value:Effect` (repeatable).
        #[arg(long = "taint", env = "KURA_NODE_TAINTS", value_delimiter = ',')]
        taints: Vec<String>,
        /// Cluster DNS service IP.
        #[arg(long, env = "KURA_CLUSTER_DNS")]
        cluster_dns: Option<IpAddr>,
        /// Kubelet (bootstrap) kubeconfig file.
        #[arg(long, env = "KURA_KUBECONFIG_FILE")]
        kubeconfig: PathBuf,
        /// Kubernetes minor, e.g. v1.34.
        #[arg(long, env = "KURA_KUBERNETES_MINOR")]
        kubernetes_minor: String,
    },
    /// Run the controllers.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scaleway secret key.
    #[arg(long, env = "SCW_SECRET_KEY", hide_env_values = true)]
    scaleway_secret_key: String,
    /// Scaleway project of the machines.
    #[arg(long, env = "SCW_DEFAULT_PROJECT_ID")]
    scaleway_project_id: String,
    /// Scaleway API endpoint (e.g. a `kura-scaleway-sim`).
    #[arg(long, env = "SCW_API_URL", default_value = "https://api.scaleway.com")]
    scaleway_api_url: String,
    /// API server URL nodes join.
    #[arg(long, env = "KURA_API_SERVER")]
    api_server: String,
    /// Cluster CA certificate (PEM) nodes trust.
    #[arg(long, env = "KURA_CLUSTER_CA_FILE")]
    cluster_ca_file: PathBuf,
    /// Cluster DNS service IP (kubelet `clusterDNS`).
    #[arg(long, env = "KURA_CLUSTER_DNS")]
    cluster_dns: Option<IpAddr>,
    /// Kubernetes minor when a Machine has no `spec.version`.
    #[arg(long, env = "KURA_KUBERNETES_MINOR", default_value = "v1.34")]
    kubernetes_minor: String,
    /// First retry delay of a Failed machine, seconds.
    #[arg(long, env = "KURA_FAILURE_BACKOFF_BASE_SECONDS", default_value_t = 30)]
    failure_backoff_base_seconds: u64,
    /// Cap of the retry delay of a Failed machine, seconds.
    #[arg(long, env = "KURA_FAILURE_BACKOFF_CAP_SECONDS", default_value_t = 3600)]
    failure_backoff_cap_seconds: u64,
    /// SSH private key for Elastic Metal self-join.
    #[arg(
        long,
        env = "KURA_SSH_KEY_FILE",
        default_value = "/etc/kura-provider/ssh/id_ed25519"
    )]
    ssh_key_file: PathBuf,
    /// SSH known-hosts file (trust on first use).
    #[arg(
        long,
        env = "KURA_SSH_KNOWN_HOSTS",
        default_value = "/var/lib/kura-provider/known_hosts"
    )]
    ssh_known_hosts: PathBuf,
    /// SSH user on Elastic Metal servers.
    #[arg(long, env = "KURA_SSH_USER", default_value = "ubuntu")]
    ssh_user: String,
    /// Metrics listener.
    #[arg(long, env = "KURA_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Cluster API version to read Machines and Clusters at.
    #[arg(long, env = "KURA_CAPI_VERSION", default_value = "v1beta1")]
    capi_version: String,
    /// Pod name (event reporter instance).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Bad input (exit 2) vs. runtime failure (exit 1).
enum Failure {
    Input(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn render(
    node_name: String,
    taints: Vec<String>,
    cluster_dns: Option<IpAddr>,
    kubeconfig: PathBuf,
    kubernetes_minor: String,
) -> Result<(), Failure> {
    let input = |e: anyhow::Error| Failure::Input(e);
    let taints = taints
        .iter()
        .map(|t| parse_taint(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| input(e.into()))?;
    let minor: KubernetesMinor = kubernetes_minor
        .parse()
        .map_err(|e: kura_provider::cloudinit::RenderError| input(e.into()))?;
    let kubeconfig = std::fs::read_to_string(&kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))
        .map_err(input)?;
    let doc = render_cloud_init(&JoinParams {
        node_name,
        taints,
        cluster_dns,
        node_ip: None,
        kubeconfig,
        kubernetes_minor: minor,
    })
    .map_err(|e| input(e.into()))?;
    out(&doc)?;
    Ok(())
}

async fn serve_metrics(
    addr: SocketAddr,
    registry: prometheus_client::registry::Registry,
) -> anyhow::Result<()> {
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(_) => {
                        (http::StatusCode::INTERNAL_SERVER_ERROR, String::new()).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, app).await.context("metrics server")
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let input = |e: anyhow::Error| Failure::Input(e);
    let ca = std::fs::read_to_string(&args.cluster_ca_file)
        .with_context(|| format!("reading {}", args.cluster_ca_file.display()))
        .map_err(input)?;
    let mut config = ProviderConfig::new(
        kura_scaleway::ProjectId::new(args.scaleway_project_id),
        &args.api_server,
        &ca,
    );
    config.cluster_dns = args.cluster_dns;
    config.default_kubernetes_minor = args
        .kubernetes_minor
        .parse()
        .map_err(|e: kura_provider::cloudinit::RenderError| input(e.into()))?;
    config.failure_backoff_base = Duration::from_secs(args.failure_backoff_base_seconds.max(1));
    config.failure_backoff_cap = Duration::from_secs(args.failure_backoff_cap_seconds.max(1));
    config.ssh_user = args.ssh_user;
    let scw =
        kura_scaleway::Client::builder(kura_scaleway::SecretKey::new(args.scaleway_secret_key))
            .base_url(args.scaleway_api_url)
            .default_project(config.project_id.clone())
            .build()
            .context("building the Scaleway client")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let ctx = Arc::new(Context {
        scw,
        kube: kura_provider::kube_impl::KubeClient::new(
            client.clone(),
            "kura-provider",
            args.pod_name,
            &args.capi_version,
        ),
        ssh: OpenSsh {
            identity_file: args.ssh_key_file,
            known_hosts: args.ssh_known_hosts,
            connect_timeout: Duration::from_secs(15),
        },
        config,
        clock: Arc::new(SystemClock),
        metrics,
    });
    let metrics_task = tokio::spawn(serve_metrics(args.metrics_addr, registry));
    tokio::select! {
        () = kura_provider::controller::run(client, ctx) => Ok(()),
        r = metrics_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Runtime(e)),
            Err(e) => Err(Failure::Runtime(e.into())),
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result: Result<(), Failure> = match cli.command {
        Command::Crds => kura_provider::crd::crds_yaml()
            .map_err(|e| Failure::Runtime(e.into()))
            .and_then(|s| out(&s).map_err(Failure::Runtime)),
        Command::Rbac { namespace } => kura_provider::rbac::rbac_yaml(&namespace)
            .map_err(|e| Failure::Runtime(e.into()))
            .and_then(|s| out(&s).map_err(Failure::Runtime)),
        Command::RenderCloudInit {
            node_name,
            taints,
            cluster_dns,
            kubeconfig,
            kubernetes_minor,
        } => render(node_name, taints, cluster_dns, kubeconfig, kubernetes_minor),
        Command::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run(*args)),
            Err(e) => Err(Failure::Runtime(e.into())),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(e)) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
