//! Renders the data-plane policy of one Kura instance as a YAML stream: the
//! NetworkPolicy `<instance>` and the NodePort Service `<instance>-external`.
//!
//! ```text
//! cargo run -q -p kura-examples --example render-netpol -- \
//!     --instance NAME --namespace NS --account ACCOUNT \
//!     [--client-cidr CIDR]... [--egress-bandwidth Q] [--primary-pod POD]
//! ```
//!
//! Client CIDRs pass the default safety rails (no `/0`, nothing broader than
//! `/8` for IPv4 or `/32` for IPv6, host bits must be clear). With
//! `--egress-bandwidth`, the validated `kubernetes.io/egress-bandwidth` pod
//! annotation is printed as a comment at the top of the stream (it belongs on
//! the StatefulSet's pod template, which this example does not render).
//! Bad input exits with status 2 and a one-line reason on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use kura_netpol::{
    Bandwidth, Cidr, CidrSet, ClientCidrRules, EGRESS_BANDWIDTH_ANNOTATION, HostBits,
    InstancePolicy, PodName, YamlStream,
};

const USAGE: &str = "usage: render-netpol --instance NAME --namespace NS --account ACCOUNT \
[--client-cidr CIDR]... [--egress-bandwidth Q] [--primary-pod POD]";

#[derive(Default)]
struct Args {
    instance: Option<String>,
    namespace: Option<String>,
    account: Option<String>,
    client_cidrs: Vec<String>,
    egress_bandwidth: Option<String>,
    primary_pod: Option<String>,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args::default();
    while let Some(arg) = argv.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "--instance" => &mut args.instance,
            "--namespace" => &mut args.namespace,
            "--account" => &mut args.account,
            "--egress-bandwidth" => &mut args.egress_bandwidth,
            "--primary-pod" => &mut args.primary_pod,
            "--client-cidr" => {
                let value = inline
                    .or_else(|| argv.next())
                    .ok_or_else(|| format!("{flag} needs a value"))?;
                args.client_cidrs.push(value);
                continue;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        };
        let value = inline
            .or_else(|| argv.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        if slot.replace(value).is_some() {
            return Err(format!("{flag} given more than once"));
        }
    }
    Ok(Parsed::Run(args))
}

fn render(args: Args) -> Result<String, String> {
    let required =
        |value: Option<String>, flag: &str| value.ok_or_else(|| format!("{flag} is required"));
    let instance = required(args.instance, "--instance")?;
    let namespace = required(args.namespace, "--namespace")?;
    let account = required(args.account, "--account")?;
    let err = |e: kura_netpol::Error| e.to_string();

    let policy = InstancePolicy::new(
        instance.parse().map_err(err)?,
        namespace.parse().map_err(err)?,
        account.parse().map_err(err)?,
    );
    let allowed = args
        .client_cidrs
        .iter()
        .map(|text| Cidr::parse(text, HostBits::Reject).map(|p| p.cidr))
        .collect::<Result<CidrSet, _>>()
        .map_err(err)?;
    let clients = ClientCidrRules::new()
        .check(&allowed, &CidrSet::new())
        .map_err(err)?;
    let policy = policy.with_client_cidrs(clients);
    let egress = args
        .egress_bandwidth
        .as_deref()
        .map(Bandwidth::parse)
        .transpose()
        .map_err(|e| format!("--egress-bandwidth: {e}"))?;
    let primary = match args.primary_pod {
        Some(pod) => PodName::new(pod).map_err(err)?,
        None => PodName::of_instance(policy.instance(), 0).map_err(err)?,
    };

    let mut out = String::new();
    if let Some(egress) = egress {
        out.push_str(&format!(
            "# pod annotation {EGRESS_BANDWIDTH_ANNOTATION}: \"{egress}\" ({} bits/s)\n",
            egress.bits_per_second()
        ));
    }
    let mut stream = YamlStream::new();
    stream
        .push(&policy.network_policy())
        .map_err(err)?
        .push(&policy.external_service(&primary, None))
        .map_err(err)?;
    out.push_str(&stream.finish());
    Ok(out)
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(|parsed| match parsed {
        Parsed::Help => Ok(format!("{USAGE}\n")),
        Parsed::Run(args) => render(args),
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("render-netpol: {reason}");
            ExitCode::from(2)
        }
    }
}
