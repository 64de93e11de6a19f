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

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let text = match cli.command {
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
