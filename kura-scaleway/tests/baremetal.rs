//! Elastic Metal lifecycle against the simulator, on the virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kura_scaleway::sim::{BillableKind, Simulator};
use kura_scaleway::{
    BaremetalServerStatus, CreateBaremetalServerRequest, Error, InstallRequest, InstallStatus,
    IpSource, ListIpsRequest, OfferStock, OptionStatus, PrivateNetworkAttachmentStatus,
    ResourceType, WaitOptions, Zone,
};

fn zone() -> Zone {
    Zone::new("fr-par-2").unwrap()
}

#[tokio::test]
async fn catalogue_has_the_offers_options_and_os_the_provider_needs() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let em = client.baremetal();
    for name in ["EM-B220E-NVME", "EM-I220E-NVME"] {
        let offer = em.find_offer_by_name(&zone(), name).await.unwrap().unwrap();
        assert_eq!(offer.stock, OfferStock::Available);
        assert!(
            offer
                .options
                .iter()
                .any(|o| o.private_network.is_some() && o.name == "Private Network")
        );
        let options = em.list_options(&zone(), Some(&offer.id)).await.unwrap();
        assert_eq!(
            options
                .iter()
                .filter(|o| o.private_network.is_some())
                .count(),
            1
        );
    }
    assert!(
        em.find_offer_by_name(&zone(), "EM-B220E")
            .await
            .unwrap()
            .is_none(),
        "exact name"
    );
    let noble = em
        .find_os(&zone(), None, "ubuntu_noble")
        .await
        .unwrap()
        .unwrap();
    assert!(noble.version.contains("Noble"));
    assert!(
        em.find_os(&zone(), None, "ubuntu_jammy")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        em.find_os(&zone(), None, "plan9_4")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn order_deliver_install_enable_option_attach_pn_detach_delete() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let em = client.baremetal();
    let project = sim.project_id();
    let offer = em
        .find_offer_by_name(&zone(), "EM-B220E-NVME")
        .await
        .unwrap()
        .unwrap();
    let os = em
        .find_os(&zone(), Some(&offer.id), "ubuntu_noble")
        .await
        .unwrap()
        .unwrap();
    let mut req = CreateBaremetalServerRequest::new(offer.id.clone(), project.clone(), "em-1");
    req.install = Some(InstallRequest::new(
        os.id.clone(),
        "em-1",
        vec!["key-1".into()],
    ));
    req.tags = vec!["capi".into()];
    let server = em.create_server(&zone(), &req).await.unwrap();
    assert_eq!(server.status, BaremetalServerStatus::Delivering);
    assert_eq!(
        server.install.as_ref().unwrap().status,
        InstallStatus::ToInstall
    );

    // Untyped error while delivering.
    match em.start_server(&zone(), &server.id).await {
        Err(Error::Untyped {
            status: 400,
            message,
            ..
        }) => assert_eq!(message, "Server is not delivered"),
        other => panic!("{other:?}"),
    }
    let start = sim.now();
    let ready = em
        .wait_for_server(&zone(), &server.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(ready.status, BaremetalServerStatus::Ready);
    assert!(sim.now() - start >= Duration::from_secs(600));
    assert!(ready.public_ipv4().is_some());
    let installed = em
        .wait_for_install(&zone(), &server.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(installed.install.unwrap().status, InstallStatus::Completed);
    assert!(
        sim.now() - start >= Duration::from_secs(50 * 60),
        "40-minute install in virtual time"
    );

    let pn = client
        .vpc()
        .ensure_private_network(
            &zone().region(),
            &project,
            "em-pn",
            Some("172.16.40.0/22"),
            &[],
        )
        .await
        .unwrap();
    // Attaching before the option is enabled fails with an untyped error.
    let err = em
        .attach_private_network(&zone(), &server.id, &pn.id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Untyped { status: 400, .. }), "{err:?}");

    assert_eq!(
        em.ensure_pn_option(&zone(), &server.id).await.unwrap(),
        OptionStatus::Enabling
    );
    assert_eq!(
        em.ensure_pn_option(&zone(), &server.id).await.unwrap(),
        OptionStatus::Enabling
    );
    let s = em
        .wait_for_options(&zone(), &server.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(s.options.len(), 1);
    assert_eq!(
        em.ensure_pn_option(&zone(), &server.id).await.unwrap(),
        OptionStatus::Enable
    );

    let spn = em
        .ensure_pn_attached(&zone(), &server.id, &pn.id)
        .await
        .unwrap();
    assert_eq!(spn.status, PrivateNetworkAttachmentStatus::Attaching);
    let vlan = spn.vlan.unwrap();
    assert_ne!(vlan, 0);
    let again = em
        .ensure_pn_attached(&zone(), &server.id, &pn.id)
        .await
        .unwrap();
    assert_eq!((again.id.clone(), again.vlan), (spn.id.clone(), Some(vlan)));
    let spns = em
        .wait_for_private_networks(&zone(), &server.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(spns[0].status, PrivateNetworkAttachmentStatus::Attached);
    let info = &sim.baremetal_servers()[0];
    assert_eq!(info.status, "ready");
    assert_eq!(info.install_status.as_deref(), Some("completed"));
    assert_eq!(
        info.options,
        [(
            "Private Network".to_owned(),
            "option_status_enable".to_owned()
        )]
    );
    assert_eq!(
        info.private_networks,
        [(pn.id.to_string(), vlan, "attached".to_owned())]
    );

    // IPAM: baremetal_private_nic rows whose resource id is the attachment.
    let ips = client
        .ipam()
        .list_all_ips(
            &zone().region(),
            &ListIpsRequest {
                source: Some(IpSource::PrivateNetwork(pn.id.clone())),
                resource_type: Some(ResourceType::BaremetalPrivateNic),
                is_ipv6: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ips.len(), 1);
    assert_eq!(ips[0].resource.as_ref().unwrap().id, spn.id.as_str());
    assert!(ips[0].address.starts_with("172.16.40."));

    // Delete is refused while a private network is attached.
    assert!(matches!(
        em.delete_server(&zone(), &server.id).await,
        Err(Error::Untyped { status: 400, .. })
    ));
    em.detach_private_network(&zone(), &server.id, &pn.id)
        .await
        .unwrap();
    sim.advance(Duration::from_secs(300));
    assert!(
        em.list_server_private_networks(&zone(), Some(&server.id), None)
            .await
            .unwrap()
            .is_empty()
    );
    let deleting = em.delete_server(&zone(), &server.id).await.unwrap();
    assert_eq!(deleting.status, BaremetalServerStatus::Deleting);
    sim.advance(Duration::from_secs(120));
    let err = em.get_server(&zone(), &server.id).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(matches!(err, Error::NotFound { resource: None, .. }));
    assert!(
        sim.ledger()
            .live_of(BillableKind::ElasticMetalServer)
            .is_empty()
    );
    client
        .vpc()
        .delete_private_network(&zone().region(), &pn.id)
        .await
        .unwrap();
    assert!(sim.ledger().live().is_empty());
}

#[tokio::test]
async fn order_errors_out_of_stock_and_cloud_init() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let em = client.baremetal();
    let project = sim.project_id();
    let empty = em
        .find_offer_by_name(&zone(), "EM-A115X-SSD")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(empty.stock, OfferStock::Empty);
    let err = em
        .create_server(
            &zone(),
            &CreateBaremetalServerRequest::new(empty.id, project.clone(), "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfStock { .. }));
    assert!(!err.is_retryable());

    let i220 = em
        .find_offer_by_name(&zone(), "EM-I220E-NVME")
        .await
        .unwrap()
        .unwrap();
    let req =
        CreateBaremetalServerRequest::new(i220.id, project, "y").user_data(b"#cloud-config\n");
    match em.create_server(&zone(), &req).await {
        Err(Error::Untyped {
            status: 503,
            message,
            ..
        }) => assert_eq!(message, "cloud-init is not supported on this offer"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.count_requests(&http::Method::POST, "/baremetal/v1/zones/fr-par-2/servers"),
        2,
        "orders are not retried on 503"
    );
    assert!(
        sim.ledger()
            .created_of(BillableKind::ElasticMetalServer)
            .is_empty()
    );
}

#[tokio::test]
async fn power_and_reinstall() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let em = client.baremetal();
    let offer = em
        .find_offer_by_name(&zone(), "EM-B220E-NVME")
        .await
        .unwrap()
        .unwrap();
    let mut req = CreateBaremetalServerRequest::new(offer.id.clone(), sim.project_id(), "em-2");
    req.option_ids = offer
        .options
        .iter()
        .filter(|o| o.private_network.is_some())
        .map(|o| o.id.clone())
        .collect();
    let s = em.create_server(&zone(), &req).await.unwrap();
    let s = em
        .wait_for_server(&zone(), &s.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(
        s.options[0].status,
        OptionStatus::Enable,
        "options ordered with the server are enabled at delivery"
    );
    assert!(s.install.is_none());
    let stopping = em.stop_server(&zone(), &s.id).await.unwrap();
    assert_eq!(stopping.status, BaremetalServerStatus::Stopping);
    let stopped = em
        .wait_for_server(&zone(), &s.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    assert_eq!(stopped.status, BaremetalServerStatus::Stopped);
    assert!(matches!(
        em.stop_server(&zone(), &s.id).await,
        Err(Error::Untyped { .. })
    ));
    em.start_server(&zone(), &s.id).await.unwrap();
    em.wait_for_server(&zone(), &s.id, WaitOptions::BAREMETAL)
        .await
        .unwrap();
    em.reboot_server(&zone(), &s.id).await.unwrap();
    let os = em
        .find_os(&zone(), None, "ubuntu_jammy")
        .await
        .unwrap()
        .unwrap();
    let s2 = em
        .install_server(&zone(), &s.id, &InstallRequest::new(os.id, "em-2", vec![]))
        .await
        .unwrap();
    assert_eq!(s2.install.unwrap().status, InstallStatus::Installing);
    let found = em
        .find_server_by_name(&zone(), "em-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, s.id);
    let listed = em.set_private_networks(&zone(), &s.id, &[]).await.unwrap();
    assert!(listed.is_empty());
    // Disable the option: disabling, then gone.
    let pn_option = s.options[0].id.clone();
    let disabling = em.delete_option(&zone(), &s.id, &pn_option).await.unwrap();
    assert_eq!(disabling.options[0].status, OptionStatus::Disabling);
    sim.advance(Duration::from_secs(600));
    assert!(
        em.get_server(&zone(), &s.id)
            .await
            .unwrap()
            .options
            .is_empty()
    );
    assert!(
        em.delete_option(&zone(), &s.id, &pn_option)
            .await
            .unwrap_err()
            .is_not_found()
    );
}
