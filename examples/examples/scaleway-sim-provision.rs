//! Provisions an Instance machine and an Elastic Metal machine against the
//! in-process Scaleway simulator, the way the machine provider does, under
//! injected faults; then tears both down and checks the billing ledger.
//!
//! Usage: `scaleway-sim-provision` (no arguments). Everything runs on the
//! simulator's virtual clock: the hour of Elastic Metal delivery and install
//! takes no real time. Exits non-zero with a one-line reason on failure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use kura_scaleway::http::Method;
use kura_scaleway::sim::{BillableKind, Fault, Simulator};
use kura_scaleway::{
    Client, CommercialType, CreateBaremetalServerRequest, CreateServerRequest, InstallRequest,
    OptionStatus, ProjectId, VolumeTemplate, WaitOptions, Zone,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn instance_machine(client: &Client, project: &ProjectId) -> Result<()> {
    let zone = Zone::new("fr-par-1")?;
    let api = client.instance();
    let pn = client
        .vpc()
        .ensure_private_network(
            &zone.region(),
            project,
            "kura-runners",
            Some("172.16.8.0/22"),
            &[],
        )
        .await?;
    let ty = CommercialType::new("PRO2-S");
    let image = client
        .marketplace()
        .find_local_image(&zone, "ubuntu_noble", &ty, "instance_sbs")
        .await?;
    let req = CreateServerRequest::new("runner-1", ty, image.id, project.clone())
        .root_volume(VolumeTemplate::sbs_gb(50))
        .tags(["capi", "scalewayinstancemachine=runner-1"]);
    // Each step is idempotent; a failed attempt is simply retried (as a
    // reconciler would on its next pass).
    let server = loop {
        match api
            .find_server_by_name(&zone, "runner-1", Some(project))
            .await?
        {
            Some(s) => break s,
            None => match api.create_server(&zone, &req).await {
                Ok(s) => break s,
                Err(e) => println!("  create failed ({e}), retrying after a lookup"),
            },
        }
    };
    api.set_user_data(&zone, &server.id, "cloud-init", "#cloud-config\n")
        .await?;
    api.ensure_private_nic(&zone, &server.id, &pn.id).await?;
    api.ensure_powered_on(&zone, &server.id).await?;
    let server = api
        .wait_for_server(&zone, &server.id, WaitOptions::INSTANCE)
        .await?;
    let ipv4 = api
        .private_network_ipv4(&zone, &server, &pn.id)
        .await?
        .ok_or("no private IPv4 yet")?;
    println!(
        "instance  {} {} state={} public={} pn-ipv4={ipv4}",
        server.name,
        server.id,
        server.state,
        server
            .public_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    );
    api.delete_server_and_wait(&zone, &server.id, WaitOptions::INSTANCE)
        .await?;
    if let Some(root) = server.volumes.get("0") {
        client
            .block()
            .ensure_volume_deleted(&zone, &root.id)
            .await?;
    }
    client
        .vpc()
        .delete_private_network(&zone.region(), &pn.id)
        .await?;
    Ok(())
}

async fn baremetal_machine(sim: &Simulator, client: &Client, project: &ProjectId) -> Result<()> {
    let zone = Zone::new("fr-par-2")?;
    let em = client.baremetal();
    let started = sim.now();
    let pn = client
        .vpc()
        .ensure_private_network(&zone.region(), project, "em-runners", None, &[])
        .await?;
    let offer = em
        .find_offer_by_name(&zone, "EM-B220E-NVME")
        .await?
        .ok_or("offer not found")?;
    let os = em
        .find_os(&zone, Some(&offer.id), "ubuntu_noble")
        .await?
        .ok_or("OS not found")?;
    let server = match em.find_server_by_name(&zone, "em-1").await? {
        Some(s) => s,
        None => {
            let mut req =
                CreateBaremetalServerRequest::new(offer.id.clone(), project.clone(), "em-1");
            req.install = Some(InstallRequest::new(os.id, "em-1", vec![]));
            req.tags = vec!["capi".into()];
            em.create_server(&zone, &req).await?
        }
    };
    em.wait_for_server(&zone, &server.id, WaitOptions::BAREMETAL)
        .await?;
    em.wait_for_install(&zone, &server.id, WaitOptions::BAREMETAL)
        .await?;
    if em.ensure_pn_option(&zone, &server.id).await? != OptionStatus::Enable {
        em.wait_for_options(&zone, &server.id, WaitOptions::BAREMETAL)
            .await?;
    }
    let spn = em.ensure_pn_attached(&zone, &server.id, &pn.id).await?;
    em.wait_for_private_networks(&zone, &server.id, WaitOptions::BAREMETAL)
        .await?;
    let server = em.get_server(&zone, &server.id).await?;
    println!(
        "baremetal {} {} status={} public={} vlan={} ({} min of simulated time)",
        server.name,
        server.id,
        server.status,
        server
            .public_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        spn.vlan.unwrap_or_default(),
        (sim.now() - started).as_secs() / 60
    );
    em.detach_private_network(&zone, &server.id, &pn.id).await?;
    sim.advance(Duration::from_secs(600));
    em.delete_server(&zone, &server.id).await?;
    sim.advance(Duration::from_secs(600));
    client
        .vpc()
        .delete_private_network(&zone.region(), &pn.id)
        .await?;
    Ok(())
}

async fn run() -> Result<()> {
    let sim = Simulator::with_token("example-secret-key");
    let client = sim.client();
    let project = sim.project_id();
    // Faults the provider must survive: a throttled read, a lost create
    // response, a 503 on a read.
    sim.inject(Fault::on(Method::GET, "/local-images").rate_limit());
    sim.inject(Fault::on(Method::POST, "/instance/v1/zones/fr-par-1/servers").drop_response());
    sim.inject(Fault::on(Method::GET, "/baremetal/v1/zones/fr-par-2/servers/").nth(3));

    instance_machine(&client, &project).await?;
    baremetal_machine(&sim, &client, &project).await?;

    let ledger = sim.ledger();
    let servers = ledger.max_concurrent(BillableKind::InstanceServer, "runner-1");
    let live = ledger.live();
    println!(
        "ledger    {} resources billed, {} left, max concurrent runner-1 servers: {servers}",
        ledger.entries().len(),
        live.len()
    );
    if servers != 1 || !live.is_empty() {
        return Err(format!("ledger check failed: {live:?}").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("scaleway-sim-provision: takes no arguments");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scaleway-sim-provision: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scaleway-sim-provision: {e}");
            ExitCode::FAILURE
        }
    }
}
