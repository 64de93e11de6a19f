//! VPC, IPAM and Marketplace against the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use kura_scaleway::sim::{BillableKind, SimConfig, Simulator};
use kura_scaleway::{
    CommercialType, CreatePrivateNetworkRequest, CreatePrivateNicRequest, CreateServerRequest,
    Error, Region, Zone,
};

fn get(sim: &Simulator, uri: &str) -> http::Response<Bytes> {
    let req = http::Request::builder()
        .uri(uri)
        .header("x-auth-token", "t")
        .body(Bytes::new())
        .unwrap();
    sim.handle(req)
}

fn json(resp: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body()).unwrap()
}

#[tokio::test]
async fn ensure_private_network_is_find_or_create_by_exact_name() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let region = Region::new("fr-par").unwrap();
    let project = sim.project_id();
    let vpc = client.vpc();
    // A network whose name contains the wanted one must not match.
    let decoy = CreatePrivateNetworkRequest {
        name: "kura-runners-old".into(),
        project_id: project.clone(),
        ..Default::default()
    };
    vpc.create_private_network(&region, &decoy).await.unwrap();
    let tags = vec!["capi".to_owned(), "tuist.dev/runner-cache".to_owned()];
    let pn = vpc
        .ensure_private_network(
            &region,
            &project,
            "kura-runners",
            Some("172.16.32.0/22"),
            &tags,
        )
        .await
        .unwrap();
    assert_eq!(pn.name, "kura-runners");
    assert_eq!(pn.tags, tags);
    assert_eq!(pn.subnets[0].subnet, "172.16.32.0/22");
    assert!(
        pn.subnets.iter().any(|s| s.subnet.contains(':')),
        "an IPv6 ULA /64 too"
    );
    let again = vpc
        .ensure_private_network(
            &region,
            &project,
            "kura-runners",
            Some("172.16.32.0/22"),
            &tags,
        )
        .await
        .unwrap();
    assert_eq!(again.id, pn.id);
    assert_eq!(
        sim.ledger().created_of(BillableKind::PrivateNetwork).len(),
        2
    );
    assert_eq!(
        vpc.get_private_network(&region, &pn.id).await.unwrap().id,
        pn.id
    );

    // Two exact matches: ambiguous, nothing created.
    let dup = CreatePrivateNetworkRequest {
        name: "kura-runners".into(),
        project_id: project.clone(),
        ..Default::default()
    };
    vpc.create_private_network(&region, &dup).await.unwrap();
    assert!(matches!(
        vpc.ensure_private_network(&region, &project, "kura-runners", None, &[])
            .await,
        Err(Error::Ambiguous { count: 2, .. })
    ));
    // Regional: invisible from another region.
    let ams = Region::new("nl-ams").unwrap();
    assert!(
        vpc.find_private_network_by_name(&ams, &project, "kura-runners")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        vpc.get_private_network(&ams, &pn.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // API-allocated subnets when no CIDR is given.
    let auto = vpc
        .ensure_private_network(&region, &project, "auto", None, &[])
        .await
        .unwrap();
    assert!(
        auto.subnets[0].subnet.ends_with("/22"),
        "{:?}",
        auto.subnets
    );
    // Create answers 200 with the object unwrapped.
    let log = sim.requests();
    assert!(
        log.iter()
            .filter(|r| r.method == http::Method::POST)
            .all(|r| r.status == 200)
    );
}

#[tokio::test]
async fn private_network_delete_is_refused_while_in_use() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let zone = Zone::new("fr-par-2").unwrap();
    let region = zone.region();
    let pn = client
        .vpc()
        .ensure_private_network(&region, &sim.project_id(), "pn", None, &[])
        .await
        .unwrap();
    let ty = CommercialType::new("DEV1-S");
    let image = client
        .marketplace()
        .find_local_image(&zone, "ubuntu_jammy", &ty, "instance_local")
        .await
        .unwrap();
    let s = client
        .instance()
        .create_server(
            &zone,
            &CreateServerRequest::new("s", ty, image.id, sim.project_id()),
        )
        .await
        .unwrap();
    let nic = client
        .instance()
        .create_private_nic(&zone, &s.id, &CreatePrivateNicRequest::new(pn.id.clone()))
        .await
        .unwrap();
    match client.vpc().delete_private_network(&region, &pn.id).await {
        Err(Error::PreconditionFailed {
            precondition: Some(p),
            status: 412,
            ..
        }) => assert_eq!(p, "resource_still_in_use"),
        other => panic!("{other:?}"),
    }
    // A second NIC on the same network is refused.
    assert!(matches!(
        client
            .instance()
            .create_private_nic(&zone, &s.id, &CreatePrivateNicRequest::new(pn.id.clone()))
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    client
        .instance()
        .delete_private_nic(&zone, &s.id, &nic.id)
        .await
        .unwrap();
    client
        .vpc()
        .delete_private_network(&region, &pn.id)
        .await
        .unwrap();
    assert!(
        client
            .vpc()
            .delete_private_network(&region, &pn.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // A NIC on a network of another region is a 404.
    let ams = client
        .vpc()
        .ensure_private_network(
            &Region::new("nl-ams").unwrap(),
            &sim.project_id(),
            "x",
            None,
            &[],
        )
        .await
        .unwrap();
    let err = client
        .instance()
        .create_private_nic(&zone, &s.id, &CreatePrivateNicRequest::new(ams.id))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { resource: Some(ref r), .. } if r == "private_network"));
}

#[test]
fn ipam_rejects_more_than_one_source_filter_by_default() {
    let sim = Simulator::with_token("t");
    let resp = get(
        &sim,
        "/ipam/v1/regions/fr-par/ips?zonal=fr-par-1&private_network_id=x",
    );
    assert_eq!(resp.status(), 400);
    let err = Error::from_response(resp.status(), resp.headers(), resp.body());
    match err {
        Error::InvalidArguments { details, .. } => assert_eq!(details[0].reason, "constraint"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        get(&sim, "/ipam/v1/regions/fr-par/ips?private_network_id=x").status(),
        200
    );
    // `unknown_type` means no filter.
    assert_eq!(
        get(
            &sim,
            "/ipam/v1/regions/fr-par/ips?resource_type=unknown_type"
        )
        .status(),
        200
    );
    assert_eq!(
        get(&sim, "/ipam/v1/regions/fr-par/ips?is_ipv6=maybe").status(),
        400
    );

    let lenient = Simulator::new(SimConfig::new("t").lenient_ipam_source_filter());
    assert_eq!(
        get(
            &lenient,
            "/ipam/v1/regions/fr-par/ips?zonal=fr-par-1&private_network_id=x"
        )
        .status(),
        200
    );
}

#[test]
fn unknown_routes_zones_and_pages_are_errors_not_panics() {
    let sim = Simulator::with_token("t");
    assert_eq!(get(&sim, "/nope").status(), 404);
    assert_eq!(
        get(&sim, "/instance/v1/zones/xx-yyy-9/servers").status(),
        400
    );
    assert_eq!(
        get(&sim, "/instance/v1/zones/fr-par-1/servers?page=0").status(),
        400
    );
    assert_eq!(
        get(&sim, "/instance/v1/zones/fr-par-1/servers?per_page=101").status(),
        400
    );
    assert_eq!(
        get(&sim, "/vpc/v2/regions/fr-par/private-networks?page_size=0").status(),
        400
    );
    let resp = get(&sim, "/baremetal/v1/zones/fr-par-2/servers/unknown");
    assert_eq!(resp.status(), 404);
    assert_eq!(json(&resp), serde_json::json!({"message":"Not Found"}));
}

#[tokio::test]
async fn marketplace_resolves_a_label_for_a_commercial_type() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let zone = Zone::new("nl-ams-1").unwrap();
    let mk = client.marketplace();
    let x86 = mk
        .find_local_image(&zone, "ubuntu_noble", &"PRO2-S".into(), "instance_sbs")
        .await
        .unwrap();
    assert_eq!(x86.arch.as_deref(), Some("x86_64"));
    assert_eq!(x86.label, "ubuntu_noble");
    let arm = mk
        .find_local_image(&zone, "ubuntu_noble", &"AMP2-C1".into(), "instance_sbs")
        .await
        .unwrap();
    assert_eq!(arm.arch.as_deref(), Some("arm64"));
    assert_ne!(arm.id, x86.id);
    let jammy = mk
        .find_local_image(&zone, "ubuntu_jammy", &"PRO2-S".into(), "instance_sbs")
        .await
        .unwrap();
    assert_ne!(jammy.id, x86.id);
    assert!(
        mk.find_local_image(&zone, "windows_95", &"PRO2-S".into(), "instance_sbs")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Ids are stable across simulators (tests can hard-code them).
    let other = Simulator::with_token("t").client();
    let again = other
        .marketplace()
        .find_local_image(&zone, "ubuntu_noble", &"PRO2-S".into(), "instance_sbs")
        .await
        .unwrap();
    assert_eq!(again.id, x86.id);
    let resp = get(
        &sim,
        "/marketplace/v2/local-images?image_label=ubuntu_noble&zone=fr-par-1&type=instance_sbs&order_by=type_asc",
    );
    assert_eq!(json(&resp)["total_count"], 2);
}
