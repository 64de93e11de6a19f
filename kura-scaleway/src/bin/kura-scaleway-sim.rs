//! Runs the Scaleway simulator over HTTP.
//!
//! `kura-scaleway-sim --port P --token TOKEN [--speed F]`: with `--speed`,
//! simulated operations run on real time multiplied by F (e.g. 60: a
//! 40-minute Elastic Metal install takes 40 s); without it, on real time.

use std::process::ExitCode;

use kura_scaleway::sim::{ClockMode, SimConfig, Simulator};

struct Args {
    port: u16,
    token: String,
    speed: f64,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        port: 0,
        token: String::new(),
        speed: 1.0,
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => {
                out.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--token" => out.token = value("--token")?,
            "--speed" => {
                out.speed = value("--speed")?
                    .parse()
                    .map_err(|e| format!("--speed: {e}"))?
            }
            "-h" | "--help" => {
                return Err("usage: kura-scaleway-sim --port P --token TOKEN [--speed F]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if out.token.is_empty() {
        return Err("--token is required".into());
    }
    if !(out.speed.is_finite() && out.speed > 0.0) {
        return Err("--speed must be positive".into());
    }
    Ok(out)
}

#[allow(clippy::print_stderr, clippy::print_stdout)]
fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kura-scaleway-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kura-scaleway-sim: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let sim =
            Simulator::new(SimConfig::new(args.token).clock(ClockMode::Real { speed: args.speed }));
        match sim.serve(args.port).await {
            Ok(server) => {
                println!("listening on {}", server.base_url());
                server.run_forever().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "kura-scaleway-sim: cannot listen on port {}: {e}",
                    args.port
                );
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_port_token_and_speed() {
        let a = parse(args("--port 8080 --token abc --speed 60")).unwrap();
        assert_eq!((a.port, a.token.as_str(), a.speed), (8080, "abc", 60.0));
        assert!(parse(args("--port 1")).is_err(), "token required");
        assert!(parse(args("--token t --speed 0")).is_err());
        assert!(parse(args("--token t --port x")).is_err());
        assert!(parse(args("--token t --bogus")).is_err());
        assert!(parse(args("--token")).is_err());
    }
}
