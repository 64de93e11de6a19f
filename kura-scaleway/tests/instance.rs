//! Instance API client methods against the in-process simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use kura_scaleway::sim::{BillableKind, Simulator};
use kura_scaleway::{
    Client, CommercialType, CreateServerRequest, DeleteStep, Error, IpSource, ListIpsRequest,
    ListServersRequest, PowerOnStep, PrivateNetworkId, ResourceType, Server, ServerAction,
    ServerState, VolumeTemplate, WaitOptions, Zone,
};

fn zone() -> Zone {
    Zone::new("fr-par-1").unwrap()
}

async fn create(client: &Client, sim: &Simulator, name: &str) -> Server {
    let ty = CommercialType::new("PRO2-S");
    let image = client
        .marketplace()
        .find_local_image(&zone(), "ubuntu_noble", &ty, "instance_sbs")
        .await
        .unwrap();
    let req = CreateServerRequest::new(name, ty, image.id, sim.project_id())
        .root_volume(VolumeTemplate::sbs_gb(50))
        .tags(["capi", "kura"]);
    client
        .instance()
        .create_server(&zone(), &req)
        .await
        .unwrap()
}

async fn pn(client: &Client, sim: &Simulator, name: &str) -> PrivateNetworkId {
    client
        .vpc()
        .ensure_private_network(&zone().region(), &sim.project_id(), name, None, &[])
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn create_returns_a_stopped_server_without_ip_or_nic() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let s = create(&client, &sim, "runner-1").await;
    assert_eq!(s.state, ServerState::Stopped);
    assert_eq!(
        s.allowed_actions,
        vec![ServerAction::Poweron, ServerAction::Backup]
    );
    assert!(s.public_ips.is_empty());
    assert!(s.private_nics.is_empty());
    assert!(s.dynamic_ip_required);
    assert_eq!(s.tags, vec!["capi", "kura"]);
    assert_eq!(s.volumes["0"].size, Some(50_000_000_000));
    let info = &sim.instance_servers()[0];
    assert_eq!(
        (info.name.as_str(), info.state.clone()),
        ("runner-1", ServerState::Stopped)
    );
    assert!(
        info.private_networks.is_empty() && info.user_data_keys.is_empty() && !info.has_public_ip
    );
    let ledger = sim.ledger();
    assert_eq!(ledger.live_of(BillableKind::InstanceServer).len(), 1);
    assert_eq!(ledger.live_of(BillableKind::Volume).len(), 1);
    let log = sim.requests();
    let post = log.iter().find(|r| r.method == http::Method::POST).unwrap();
    assert_eq!(post.status, 201);
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert!(body.get("user_data").is_none() && body.get("private_nics").is_none());
}

#[tokio::test]
async fn create_rejects_missing_fields_and_unknown_image() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let req = CreateServerRequest {
        name: "x".into(),
        ..CreateServerRequest::default()
    };
    match client.instance().create_server(&zone(), &req).await {
        Err(Error::InvalidArguments {
            details,
            status: 400,
            ..
        }) => {
            let names: Vec<_> = details.iter().map(|d| d.argument_name.as_str()).collect();
            assert_eq!(names, ["commercial_type", "image"]);
            assert!(details.iter().all(|d| d.reason == "required"));
        }
        other => panic!("{other:?}"),
    }
    let req = CreateServerRequest::new("x", "PRO2-S", "00000000-0000-4000-8000-000000000000", "p");
    match client.instance().create_server(&zone(), &req).await {
        Err(Error::NotFound {
            resource: Some(r), ..
        }) => assert_eq!(r, "instance_image"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn power_cycle_follows_allowed_actions_and_dynamic_ip_lives_while_running() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;

    // poweroff / terminate on a stopped server: the legacy 400.
    for action in [ServerAction::Poweroff, ServerAction::Terminate] {
        match api.server_action(&zone(), &s.id, action).await {
            Err(Error::InvalidRequest {
                status: 400,
                message,
                ..
            }) => {
                assert_eq!(message, "server should be running")
            }
            other => panic!("{other:?}"),
        }
    }
    let task = api
        .server_action(&zone(), &s.id, ServerAction::Poweron)
        .await
        .unwrap();
    assert_eq!(task.description, "server_batch_poweron");
    let starting = api.get_server(&zone(), &s.id).await.unwrap();
    assert_eq!(starting.state, ServerState::Starting);
    assert_eq!(
        starting.allowed_actions,
        vec![ServerAction::StopInPlace, ServerAction::Backup]
    );
    assert!(starting.public_ips[0].dynamic);

    let running = api
        .wait_for_server(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert_eq!(running.state, ServerState::Running);
    assert!(running.public_ipv4().is_some());
    // The dynamic IP is a zonal IPAM row of the server.
    let zonal = ListIpsRequest {
        source: Some(IpSource::Zonal(zone())),
        ..ListIpsRequest::default()
    };
    let rows = client
        .ipam()
        .list_all_ips(&zone().region(), &zonal)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ipv4(), running.public_ipv4());
    assert_eq!(
        rows[0].source.as_ref().unwrap().zonal.as_deref(),
        Some("fr-par-1")
    );
    assert_eq!(
        rows[0].resource.as_ref().unwrap().resource_type,
        ResourceType::InstanceServer
    );
    // poweron on running: refused.
    assert!(matches!(
        api.server_action(&zone(), &s.id, ServerAction::Poweron)
            .await,
        Err(Error::InvalidRequest { .. })
    ));
    // DELETE only while stopped.
    assert!(matches!(
        api.delete_server(&zone(), &s.id).await,
        Err(Error::InvalidRequest { .. })
    ));

    api.server_action(&zone(), &s.id, ServerAction::Poweroff)
        .await
        .unwrap();
    let stopped = api
        .wait_for_server(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert_eq!(stopped.state, ServerState::Stopped);
    assert!(stopped.public_ips.is_empty());
    assert!(
        client
            .ipam()
            .list_all_ips(&zone().region(), &zonal)
            .await
            .unwrap()
            .is_empty()
    );
    let ledger = sim.ledger();
    let ips = ledger.created_of(BillableKind::PublicIp);
    assert_eq!(ips.len(), 1);
    assert!(ips[0].deleted_at.is_some());
}

#[tokio::test]
async fn terminate_removes_the_server_but_not_its_sbs_volume() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    api.server_action(&zone(), &s.id, ServerAction::Poweron)
        .await
        .unwrap();
    sim.advance(Duration::from_secs(10));
    api.server_action(&zone(), &s.id, ServerAction::Terminate)
        .await
        .unwrap();
    let terminating = api.get_server(&zone(), &s.id).await.unwrap();
    assert_eq!(terminating.state_detail, "terminating");
    assert!(terminating.allowed_actions.is_empty());
    api.wait_for_server_gone(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    let err = api.get_server(&zone(), &s.id).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(matches!(err, Error::NotFound { resource: Some(ref r), .. } if r == "instance_server"));
    assert!(
        sim.ledger()
            .live_of(BillableKind::InstanceServer)
            .is_empty()
    );
    let volumes = sim.ledger().live_of(BillableKind::Volume).len();
    assert_eq!(volumes, 1, "the SBS root volume survives terminate");
    let vol = s.volumes["0"].id.clone();
    client.block().delete_volume(&zone(), &vol).await.unwrap();
    assert!(sim.ledger().live().is_empty());
    // Already gone counts as done.
    client
        .block()
        .ensure_volume_deleted(&zone(), &vol)
        .await
        .unwrap();
}

#[tokio::test]
async fn user_data_is_raw_text_and_unknown_key_is_an_empty_404() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    let cloud_init = "#cloud-config\nruncmd:\n  - [bash, /opt/bootstrap-node.sh]\n";
    api.set_user_data(&zone(), &s.id, "cloud-init", cloud_init)
        .await
        .unwrap();
    assert_eq!(
        api.get_user_data(&zone(), &s.id, "cloud-init")
            .await
            .unwrap(),
        Bytes::from(cloud_init)
    );
    assert_eq!(
        api.list_user_data(&zone(), &s.id).await.unwrap(),
        vec!["cloud-init"]
    );
    let err = api
        .get_user_data(&zone(), &s.id, "missing")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    api.delete_user_data(&zone(), &s.id, "cloud-init")
        .await
        .unwrap();
    assert!(api.list_user_data(&zone(), &s.id).await.unwrap().is_empty());

    // The API wants text/plain, not JSON.
    let req = http::Request::builder()
        .method("PATCH")
        .uri(format!(
            "/instance/v1/zones/fr-par-1/servers/{}/user_data/cloud-init",
            s.id
        ))
        .header("x-auth-token", "t")
        .header("content-type", "application/json")
        .body(Bytes::from_static(b"\"x\""))
        .unwrap();
    assert_eq!(sim.handle(req).status(), 400);
}

#[tokio::test]
async fn private_nic_has_no_ip_and_ipam_has_upper_case_mac_v4_and_v6() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    let pn = pn(&client, &sim, "kura").await;
    let nic = api.ensure_private_nic(&zone(), &s.id, &pn).await.unwrap();
    assert_eq!(
        nic.mac_address.as_str(),
        nic.mac_address.as_str().to_ascii_lowercase()
    );
    assert_eq!(nic.ipam_ip_ids.len(), 2);
    // Idempotent: a second ensure returns the same NIC.
    let again = api.ensure_private_nic(&zone(), &s.id, &pn).await.unwrap();
    assert_eq!(again.id, nic.id);
    assert_eq!(
        api.list_private_nics(&zone(), &s.id).await.unwrap().len(),
        1
    );
    let nic = api
        .wait_for_private_nic(&zone(), &s.id, &nic.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert_eq!(nic.state, kura_scaleway::PrivateNicState::Available);

    let region = zone().region();
    let rows = client
        .ipam()
        .list_all_ips(
            &region,
            &ListIpsRequest {
                source: Some(IpSource::PrivateNetwork(pn.clone())),
                resource_type: Some(ResourceType::InstancePrivateNic),
                resource_id: Some(nic.id.to_string()),
                ..ListIpsRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.is_ipv6).count(), 1);
    for r in &rows {
        let res = r.resource.as_ref().unwrap();
        assert_eq!(
            res.id,
            nic.id.as_str(),
            "resource.id is the NIC, not the server"
        );
        assert_eq!(res.name.as_deref(), Some("runner-1"));
        let mac = res.mac_address.as_ref().unwrap();
        assert_eq!(mac.as_str(), mac.as_str().to_ascii_uppercase());
        assert_eq!(*mac, nic.mac_address);
        assert!(r.source.as_ref().unwrap().subnet_id.is_some());
        assert!(r.zone.is_none());
    }
    // A lower-case MAC query matches.
    let by_mac = client
        .ipam()
        .list_all_ips(
            &region,
            &ListIpsRequest {
                mac_address: Some(nic.mac_address.as_str().to_owned()),
                is_ipv6: Some(false),
                ..ListIpsRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_mac.len(), 1);

    let server = api.get_server(&zone(), &s.id).await.unwrap();
    assert_eq!(server.private_nics.len(), 1);
    let v4 = api
        .private_network_ipv4(&zone(), &server, &pn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(v4), rows.iter().find_map(|r| r.ipv4()));
    assert!(v4.to_string().starts_with("172.16."));

    // Detaching removes the IPAM rows.
    api.delete_private_nic(&zone(), &s.id, &nic.id)
        .await
        .unwrap();
    let server = api.get_server(&zone(), &s.id).await.unwrap();
    assert_eq!(
        api.private_network_ipv4(&zone(), &server, &pn)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn find_by_name_is_exact_although_the_api_filter_is_a_substring() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    create(&client, &sim, "web-2").await;
    create(&client, &sim, "my-web").await;
    assert!(
        api.find_server_by_name(&zone(), "web", None)
            .await
            .unwrap()
            .is_none()
    );
    let substring = api
        .list_all_servers(&zone(), &ListServersRequest::name("web"))
        .await
        .unwrap();
    assert_eq!(substring.len(), 2);
    let web = create(&client, &sim, "web").await;
    let found = api
        .find_server_by_name(&zone(), "web", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, web.id);
    create(&client, &sim, "web").await;
    assert!(matches!(
        api.find_server_by_name(&zone(), "web", None).await,
        Err(Error::Ambiguous { count: 2, .. })
    ));
}

#[tokio::test]
async fn server_list_paginates_with_total_count_header_and_link() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    for i in 0..7 {
        create(&client, &sim, &format!("s{i}")).await;
    }
    let api = client.instance();
    let filter = ListServersRequest {
        per_page: Some(3),
        ..ListServersRequest::default()
    };
    let page = api.list_servers_page(&zone(), &filter, 1).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.total_count, Some(7));
    let mut pages = api.list_servers(&zone(), &filter);
    let mut sizes = Vec::new();
    while let Some(p) = pages.next_page().await {
        sizes.push(p.unwrap().len());
    }
    assert_eq!(sizes, [3, 3, 1]);
    let all = api.list_all_servers(&zone(), &filter).await.unwrap();
    let mut names: Vec<_> = all.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 7);

    let req = http::Request::builder()
        .uri("/instance/v1/zones/fr-par-1/servers?page=2&per_page=3")
        .header("x-auth-token", "t")
        .body(Bytes::new())
        .unwrap();
    let resp = sim.handle(req);
    assert_eq!(resp.headers()["x-total-count"], "7");
    let link = resp.headers()["link"].to_str().unwrap();
    assert!(link.contains("page=3&per_page=3>; rel=\"next\""), "{link}");
    assert!(link.contains("rel=\"last\""));
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert!(
        body.get("total_count").is_none(),
        "the Instance server list has no total_count"
    );
    // per_page above 100 is refused before sending.
    let bad = ListServersRequest {
        per_page: Some(101),
        ..ListServersRequest::default()
    };
    assert!(matches!(
        api.list_servers_page(&zone(), &bad, 1).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn ensure_powered_on_is_idempotent() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    assert_eq!(
        api.ensure_powered_on(&zone(), &s.id).await.unwrap(),
        PowerOnStep::PoweringOn
    );
    assert_eq!(
        api.ensure_powered_on(&zone(), &s.id).await.unwrap(),
        PowerOnStep::AlreadyOn(ServerState::Starting)
    );
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        api.ensure_powered_on(&zone(), &s.id).await.unwrap(),
        PowerOnStep::AlreadyOn(ServerState::Running)
    );
    assert_eq!(sim.count_requests(&http::Method::POST, "/action"), 1);
    api.server_action(&zone(), &s.id, ServerAction::Poweroff)
        .await
        .unwrap();
    assert_eq!(
        api.ensure_powered_on(&zone(), &s.id).await.unwrap(),
        PowerOnStep::Busy(ServerState::Stopping)
    );
}

#[tokio::test]
async fn delete_state_machine_from_running_stopping_stopped_and_gone() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    api.server_action(&zone(), &s.id, ServerAction::Poweron)
        .await
        .unwrap();
    // starting: wait (poweroff is not allowed while starting).
    assert_eq!(
        api.delete_server_step(&zone(), &s.id).await.unwrap(),
        DeleteStep::Waiting(ServerState::Starting)
    );
    sim.advance(Duration::from_secs(10));
    assert_eq!(
        api.delete_server_step(&zone(), &s.id).await.unwrap(),
        DeleteStep::PoweringOff
    );
    assert_eq!(
        api.delete_server_step(&zone(), &s.id).await.unwrap(),
        DeleteStep::Waiting(ServerState::Stopping)
    );
    sim.advance(Duration::from_secs(60));
    assert_eq!(
        api.delete_server_step(&zone(), &s.id).await.unwrap(),
        DeleteStep::Deleted
    );
    assert_eq!(
        api.delete_server_step(&zone(), &s.id).await.unwrap(),
        DeleteStep::Gone
    );
    // No action was ever refused.
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.status < 400 || r.status == 404)
    );

    let s2 = create(&client, &sim, "runner-2").await;
    api.server_action(&zone(), &s2.id, ServerAction::Poweron)
        .await
        .unwrap();
    api.delete_server_and_wait(&zone(), &s2.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert!(
        sim.ledger()
            .live_of(BillableKind::InstanceServer)
            .is_empty()
    );
}

#[tokio::test]
async fn wrong_token_is_denied_authentication() {
    let sim = Simulator::with_token("right");
    let client = Client::builder(kura_scaleway::SecretKey::new("wrong"))
        .transport(sim.transport())
        .clock(sim.clock())
        .build()
        .unwrap();
    match client.instance().get_server(&zone(), &"x".into()).await {
        Err(e @ Error::DeniedAuthentication { .. }) => {
            assert_eq!(e.status(), Some(401));
            assert!(e.request_id().is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn waiter_times_out_on_the_virtual_clock() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let s = create(&client, &sim, "runner-1").await;
    assert!(sim.set_instance_server_locked(s.id.as_str(), true));
    // locked is terminal for the server waiter.
    let locked = client
        .instance()
        .wait_for_server(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert_eq!(locked.state, ServerState::Locked);
    let start = sim.now();
    let err = client
        .instance()
        .delete_server_and_wait(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WaitTimeout { .. }), "{err:?}");
    assert_eq!(sim.now() - start, Duration::from_secs(300));
}

/// Regression (found by `proptest_state`): a `backup` during `starting`
/// cancelled the pending transition and the server stayed `starting` forever.
#[tokio::test]
async fn backup_does_not_cancel_a_pending_poweron() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    api.server_action(&zone(), &s.id, ServerAction::Poweron)
        .await
        .unwrap();
    let task = api
        .server_action(&zone(), &s.id, ServerAction::Backup)
        .await
        .unwrap();
    assert_eq!(task.description, "server_backup");
    let s = api
        .wait_for_server(&zone(), &s.id, WaitOptions::INSTANCE)
        .await
        .unwrap();
    assert_eq!(s.state, ServerState::Running);
}

#[tokio::test]
async fn update_server_and_nic_and_delete_leftover_volume() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let s = create(&client, &sim, "runner-1").await;
    let req = kura_scaleway::UpdateServerRequest {
        name: Some("runner-1b".into()),
        tags: Some(vec!["x".into()]),
        ..Default::default()
    };
    let updated = api.update_server(&zone(), &s.id, &req).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.tags.clone()),
        ("runner-1b", vec!["x".to_owned()])
    );

    let pn = pn(&client, &sim, "kura").await;
    let nic = api.ensure_private_nic(&zone(), &s.id, &pn).await.unwrap();
    let nic = api
        .update_private_nic(&zone(), &s.id, &nic.id, &["k=v".to_owned()])
        .await
        .unwrap();
    assert_eq!(nic.tags, vec!["k=v"]);
    assert_eq!(
        api.get_private_nic(&zone(), &s.id, &nic.id)
            .await
            .unwrap()
            .tags,
        vec!["k=v"]
    );

    // IPAM pagination (page_size style) across two pages: IPv4 + IPv6.
    let req = ListIpsRequest {
        page_size: Some(1),
        ..ListIpsRequest::default()
    };
    let mut pages = client.ipam().list_ips(&zone().region(), &req);
    let mut n = 0;
    while let Some(page) = pages.next_page().await {
        assert_eq!(page.unwrap().len(), 1);
        n += 1;
    }
    assert_eq!(n, 2);

    // DELETE (not terminate) detaches the root volume, which stays billed.
    api.delete_private_nic(&zone(), &s.id, &nic.id)
        .await
        .unwrap();
    api.delete_server(&zone(), &s.id).await.unwrap();
    let vol = s.volumes["0"].id.clone();
    assert_eq!(sim.ledger().live_of(BillableKind::Volume).len(), 1);
    api.delete_volume(&zone(), &vol).await.unwrap();
    assert!(sim.ledger().live_of(BillableKind::Volume).is_empty());
    assert!(
        api.delete_volume(&zone(), &vol)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn attached_volume_cannot_be_deleted() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let s = create(&client, &sim, "runner-1").await;
    let err = client
        .block()
        .delete_volume(&zone(), &s.volumes["0"].id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PreconditionFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn real_clock_mode_runs_transitions_without_advance() {
    use kura_scaleway::sim::{ClockMode, SimConfig};
    // A million times faster than real time: a 6 s power-on takes 6 µs.
    let sim = Simulator::new(SimConfig::new("t").clock(ClockMode::Real { speed: 1_000_000.0 }));
    let client = sim.client();
    let s = create(&client, &sim, "runner-1").await;
    client
        .instance()
        .server_action(&zone(), &s.id, ServerAction::Poweron)
        .await
        .unwrap();
    // Wait on the condition with a deadline (no advance, no fixed sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = client
            .instance()
            .get_server(&zone(), &s.id)
            .await
            .unwrap()
            .state;
        if state == ServerState::Running {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {state}");
        tokio::task::yield_now().await;
    }
}
