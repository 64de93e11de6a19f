//! Issue per-account peer certificates on disk.
//!
//! ```text
//! cargo run -q -p kura-examples --example peer-certs -- \
//!     --account ACCOUNT --namespace NS --instance INSTANCE \
//!     --ca-dir CA_DIR --out LEAF_DIR [--extra-name HOST]... [--leaf-days N]
//! ```
//!
//! Creates the account CA in `CA_DIR` (`ca.pem`, `ca-key.pem`) unless it is
//! already there, in which case it is loaded, validated and reused. Then issues
//! the instance leaf into `LEAF_DIR` (`ca.pem`, `tls.crt`, `tls.key`). Bad input
//! exits non-zero with a one-line reason.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kura_ca::time::{Duration, OffsetDateTime};
use kura_ca::{
    AccountCa, AccountHandle, AccountPki, CA_CERT_KEY, CA_KEY_KEY, CaOptions, HostName,
    InstanceName, LeafRequest, Namespace, SecretData,
};

/// Issue a per-account CA (once) and an instance peer leaf.
#[derive(Parser, Debug)]
#[command(name = "peer-certs")]
struct Args {
    /// Account handle (DNS-1123 label characters).
    #[arg(long)]
    account: String,
    /// Kubernetes namespace of the instance.
    #[arg(long)]
    namespace: String,
    /// KuraInstance name.
    #[arg(long)]
    instance: String,
    /// Directory holding (or receiving) the account CA: ca.pem, ca-key.pem.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Directory receiving the leaf: ca.pem, tls.crt, tls.key.
    #[arg(long = "out")]
    out: PathBuf,
    /// Extra DNS name for the leaf (repeatable).
    #[arg(long = "extra-name")]
    extra_name: Vec<String>,
    /// Leaf lifetime in days.
    #[arg(long, default_value_t = 730)]
    leaf_days: i64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("peer-certs: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let account = AccountHandle::new(args.account.as_str()).map_err(|e| e.to_string())?;
    let namespace = Namespace::new(args.namespace.as_str()).map_err(|e| e.to_string())?;
    let instance = InstanceName::new(args.instance.as_str()).map_err(|e| e.to_string())?;
    if args.leaf_days <= 0 {
        return Err(format!(
            "--leaf-days must be positive, got {}",
            args.leaf_days
        ));
    }
    let mut request = LeafRequest::new(instance, namespace, account.clone())
        .validity(Duration::days(args.leaf_days));
    for name in &args.extra_name {
        request = request.extra_name(HostName::new(name.as_str()).map_err(|e| e.to_string())?);
    }
    let now = OffsetDateTime::now_utc();

    let ca_cert = args.ca_dir.join(CA_CERT_KEY);
    let ca_key = args.ca_dir.join(CA_KEY_KEY);
    let pki = if ca_cert.exists() || ca_key.exists() {
        let data = SecretData::from([
            (CA_CERT_KEY.to_owned(), read(&ca_cert)?),
            (CA_KEY_KEY.to_owned(), read(&ca_key)?),
        ]);
        let pki = AccountPki::from_secret_data(&data, now)
            .map_err(|e| format!("cannot use the CA in {}: {e}", args.ca_dir.display()))?;
        let expected = kura_ca::ca_common_name(&account);
        if pki.signing_ca().common_name() != expected {
            return Err(format!(
                "the CA in {} belongs to {:?}, not account {:?}",
                args.ca_dir.display(),
                pki.signing_ca().common_name(),
                account.as_str()
            ));
        }
        println!("reused CA   {}", ca_cert.display());
        pki
    } else {
        let ca =
            AccountCa::generate(&account, &CaOptions::default(), now).map_err(|e| e.to_string())?;
        let pki = AccountPki::from_ca(ca);
        write_all(&args.ca_dir, &pki.to_secret_data())?;
        println!("created CA  {}", ca_cert.display());
        pki
    };

    let leaf = pki.issue_leaf(&request, now).map_err(|e| e.to_string())?;
    write_all(&args.out, &leaf.to_secret_data())?;
    println!("issued leaf {}", args.out.join("tls.crt").display());
    println!("  verify as {}", request.peer_service_dns_name());
    println!("  valid to  {}", now + Duration::days(args.leaf_days));
    for san in request.sans() {
        println!("  SAN       {san}");
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes each entry atomically (temp file + rename); keys are created 0600.
fn write_all(dir: &Path, data: &SecretData) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, bytes) in data {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if name.contains("key") { 0o600 } else { 0o644 });
        }
        let mut file = options
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
