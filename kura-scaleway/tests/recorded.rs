//! Decoding of response shapes taken from recorded real exchanges (with
//! unknown fields and enum values added), and the exact requests the client
//! sends, at the transport boundary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kura_scaleway::transport::ScriptedTransport;
use kura_scaleway::{
    Client, CreatePrivateNicRequest, CreateServerRequest, Error, IpSource, ListIpsRequest,
    ListServersRequest, PrivateNicState, Region, RetryPolicy, SecretKey, ServerAction, ServerState,
    VolumeTemplate, Zone,
};

fn client(t: &ScriptedTransport) -> Client {
    Client::builder(SecretKey::new("SCWXXX"))
        .base_url("https://api.scaleway.com")
        .transport(t.clone())
        .retry(RetryPolicy::none())
        .build()
        .unwrap()
}

const SERVER: &str = r#"{"server":{"id":"6a8ab4c2-0d51-4b6c-8a85-2ad0c0e6fc01","name":"runner-1","arch":"x86_64",
  "commercial_type":"PRO2-S","boot_type":"local","organization":"o","project":"p","hostname":"runner-1",
  "image":{"id":"i","name":"Ubuntu 24.04 Noble Numbat","arch":"x86_64","extra_volumes":{},"from_server":"","creation_date":"2024-04-01T00:00:00+00:00"},
  "volumes":{"0":{"boot":false,"id":"v","name":"Ubuntu 24.04","volume_type":"sbs_volume","state":"available","zone":"fr-par-1"}},
  "tags":["capi"],"state":"stopped","protected":false,"state_detail":"","public_ip":null,"public_ips":[],"mac_address":"de:00:00:6c:1e:2f",
  "routed_ip_enabled":true,"ipv6":null,"extra_networks":[],"dynamic_ip_required":true,"enable_ipv6":false,"private_ip":null,
  "creation_date":"2024-05-02T10:00:00.000000+00:00","modification_date":"2024-05-02T10:00:00.000000+00:00",
  "bootscript":null,"security_group":{"id":"sg","name":"Default security group"},"location":null,"maintenances":[],
  "allowed_actions":["poweron","backup","hibernate"],"placement_group":null,"private_nics":[],"zone":"fr-par-1",
  "filesystems":[],"end_of_service":false,"admin_password_encryption_ssh_key_id":null,"a_field_from_2030":{"x":1}}}"#;

#[tokio::test]
async fn create_server_request_and_recorded_response() {
    let t = ScriptedTransport::new();
    t.push(
        201,
        &[
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
            (
                "location",
                "https://api.scaleway.com/instance/v1/zones/fr-par-1/servers/6a8ab4c2",
            ),
        ],
        SERVER,
    );
    let c = client(&t);
    let zone = Zone::new("fr-par-1").unwrap();
    let req = CreateServerRequest::new("runner-1", "PRO2-S", "i", "p")
        .root_volume(VolumeTemplate::sbs_gb(50))
        .tags(["capi"])
        .dynamic_ip_required(true);
    let s = c.instance().create_server(&zone, &req).await.unwrap();
    assert_eq!(s.state, ServerState::Stopped);
    assert_eq!(
        s.allowed_actions,
        vec![
            ServerAction::Poweron,
            ServerAction::Backup,
            ServerAction::Unknown("hibernate".into())
        ]
    );
    assert_eq!(
        s.volumes["0"].volume_type,
        Some(kura_scaleway::VolumeType::SbsVolume)
    );

    let sent = &t.requests()[0];
    assert_eq!(sent.method(), http::Method::POST);
    assert_eq!(
        sent.uri(),
        "https://api.scaleway.com/instance/v1/zones/fr-par-1/servers"
    );
    assert_eq!(sent.headers()["x-auth-token"], "SCWXXX");
    assert_eq!(sent.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(sent.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name":"runner-1","commercial_type":"PRO2-S","image":"i","project":"p","tags":["capi"],
            "dynamic_ip_required":true,"volumes":{"0":{"size":50_000_000_000u64,"volume_type":"sbs_volume"}}})
    );
}

#[tokio::test]
async fn instance_list_uses_per_page_comma_tags_and_x_total_count() {
    let t = ScriptedTransport::new();
    let one = r#"{"servers":[{"id":"a","name":"web","state":"running"},{"id":"b","name":"web-2","state":"stopped in place"}]}"#;
    let two = r#"{"servers":[{"id":"c","name":"web","state":"starting"}]}"#;
    t.push(
        200,
        &[
            ("x-total-count", "3"),
            (
                "link",
                "</instance/v1/zones/fr-par-1/servers?page=2&per_page=2>; rel=\"next\"",
            ),
        ],
        one,
    );
    t.push(200, &[("x-total-count", "3")], two);
    let c = client(&t);
    let filter = ListServersRequest {
        name: Some("web".into()),
        tags: vec!["a".into(), "b".into()],
        per_page: Some(2),
        ..Default::default()
    };
    let all = c
        .instance()
        .list_all_servers(&Zone::new("fr-par-1").unwrap(), &filter)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].state, ServerState::StoppedInPlace);
    let uris: Vec<String> = t.requests().iter().map(|r| r.uri().to_string()).collect();
    assert_eq!(
        uris,
        [
            "https://api.scaleway.com/instance/v1/zones/fr-par-1/servers?page=1&per_page=2&name=web&tags=a%2Cb",
            "https://api.scaleway.com/instance/v1/zones/fr-par-1/servers?page=2&per_page=2&name=web&tags=a%2Cb",
        ]
    );
    // Two exact matches named "web": ambiguous.
    t.push(200, &[("x-total-count", "3")], one);
    t.push(200, &[("x-total-count", "3")], two);
    let found = c
        .instance()
        .find_server_by_name(&Zone::new("fr-par-1").unwrap(), "web", None)
        .await;
    assert!(matches!(found, Err(Error::Ambiguous { count: 2, .. })));
}

#[tokio::test]
async fn user_data_is_sent_as_text_plain() {
    let t = ScriptedTransport::new();
    t.push(204, &[], "");
    t.push(404, &[("content-type", "text/plain")], "");
    let c = client(&t);
    let zone = Zone::new("fr-par-1").unwrap();
    c.instance()
        .set_user_data(&zone, &"s".into(), "cloud-init", "#cloud-config\n")
        .await
        .unwrap();
    let sent = &t.requests()[0];
    assert_eq!(sent.method(), http::Method::PATCH);
    assert_eq!(
        sent.uri().path(),
        "/instance/v1/zones/fr-par-1/servers/s/user_data/cloud-init"
    );
    assert_eq!(sent.headers()["content-type"], "text/plain");
    assert_eq!(&sent.body()[..], b"#cloud-config\n");
    let err = c
        .instance()
        .get_user_data(&zone, &"s".into(), "nope")
        .await
        .unwrap_err();
    assert!(err.is_not_found());
}

#[tokio::test]
async fn recorded_private_nic_and_ipam_lookup() {
    let t = ScriptedTransport::new();
    t.push_json(201, r#"{"private_nic":{"id":"nic-1","server_id":"s","private_network_id":"pn","mac_address":"02:00:00:1b:a4:b6",
        "state":"syncing","tags":[],"creation_date":"2024-05-02T10:00:00+00:00","modification_date":"2024-05-02T10:00:00+00:00",
        "zone":"fr-par-1","ipam_ip_ids":["v4","v6"],"new":true}}"#);
    t.push_json(200, r#"{"total_count":2,"ips":[
        {"id":"v6","address":"fd5f:519c:6d46:2728::3/64","is_ipv6":true,"source":{"subnet_id":"s6"},
         "resource":{"type":"instance_private_nic","id":"nic-1","mac_address":"02:00:00:1B:A4:B6","name":"runner-1"},"region":"fr-par","zone":null,"tags":[],"reverses":[]},
        {"id":"v4","address":"172.16.64.7/22","is_ipv6":false,"source":{"subnet_id":"s4"},
         "resource":{"type":"instance_private_nic","id":"nic-1","mac_address":"02:00:00:1B:A4:B6","name":"runner-1"},"region":"fr-par","zone":null,"tags":[],"reverses":[]}]}"#);
    let c = client(&t);
    let zone = Zone::new("fr-par-1").unwrap();
    let nic = c
        .instance()
        .create_private_nic(&zone, &"s".into(), &CreatePrivateNicRequest::new("pn"))
        .await
        .unwrap();
    assert_eq!(nic.state, PrivateNicState::Syncing);
    let server: kura_scaleway::Server = serde_json::from_value(serde_json::json!({
        "id":"s","name":"other-name","private_nics":[{"id":"nic-1","private_network_id":"pn","mac_address":"02:00:00:1b:a4:b6","state":"available"}]
    }))
    .unwrap();
    let ip = c
        .instance()
        .private_network_ipv4(&zone, &server, &"pn".into())
        .await
        .unwrap();
    assert_eq!(
        ip,
        Some("172.16.64.7".parse().unwrap()),
        "IPv4 only, prefix stripped, matched by NIC id"
    );
    let ipam = &t.requests()[1];
    assert_eq!(ipam.uri().path(), "/ipam/v1/regions/fr-par/ips");
    let q = kura_scaleway::request::parse_query(ipam.uri().query().unwrap());
    let sources: Vec<_> = q
        .iter()
        .filter(|(k, _)| {
            [
                "zonal",
                "regional",
                "private_network_id",
                "subnet_id",
                "source_vpc_id",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert_eq!(
        sources,
        [&("private_network_id".to_owned(), "pn".to_owned())]
    );
    assert!(q.contains(&("is_ipv6".into(), "false".into())));
}

#[tokio::test]
async fn ipam_source_filter_is_single_by_construction() {
    let t = ScriptedTransport::new();
    t.push_json(200, r#"{"total_count":0,"ips":[]}"#);
    let c = client(&t);
    let req = ListIpsRequest {
        source: Some(IpSource::Zonal(Zone::new("fr-par-1").unwrap())),
        ..Default::default()
    };
    c.ipam()
        .list_all_ips(&Region::new("fr-par").unwrap(), &req)
        .await
        .unwrap();
    let uri = t.requests()[0].uri().to_string();
    assert!(
        uri.contains("zonal=fr-par-1") && !uri.contains("private_network_id"),
        "{uri}"
    );
}

#[tokio::test]
async fn recorded_vpc_create_is_200_unwrapped_and_em_errors_are_untyped() {
    let t = ScriptedTransport::new();
    t.push_json(200, r#"{"id":"pn","name":"kura","organization_id":"o","project_id":"p","region":"fr-par","tags":[],
        "created_at":"2024-05-02T10:00:00Z","updated_at":"2024-05-02T10:00:00Z","vpc_id":"vpc","dhcp_enabled":true,
        "subnets":[{"id":"s4","subnet":"172.16.4.0/22","created_at":null},{"id":"s6","subnet":"fd5f:519c:6d46:2728::/64"}],"routing_enabled":true}"#);
    t.push_json(404, r#"{"message":"Not Found"}"#);
    t.push_json(400, r#"{"message":"Server is not delivered"}"#);
    let c = client(&t);
    let pn = c
        .vpc()
        .create_private_network(
            &Region::new("fr-par").unwrap(),
            &kura_scaleway::CreatePrivateNetworkRequest {
                name: "kura".into(),
                project_id: "p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pn.subnets.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(t.requests()[0].body()).unwrap();
    assert_eq!(
        body["subnets"],
        serde_json::Value::Null,
        "subnets: null lets the API allocate"
    );
    let zone = Zone::new("fr-par-2").unwrap();
    assert!(
        c.baremetal()
            .get_server(&zone, &"x".into())
            .await
            .unwrap_err()
            .is_not_found()
    );
    let err = c
        .baremetal()
        .start_server(&zone, &"x".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Untyped { status: 400, ref message, .. } if message == "Server is not delivered")
    );
}

#[tokio::test]
async fn vlan_zero_is_refused() {
    let t = ScriptedTransport::new();
    t.push_json(200, r#"{"total_count":0,"server_private_networks":[]}"#);
    t.push_json(
        200,
        r#"{"id":"spn","server_id":"x","private_network_id":"pn","vlan":0,"status":"attaching"}"#,
    );
    let c = client(&t);
    let err = c
        .baremetal()
        .ensure_pn_attached(&Zone::new("fr-par-2").unwrap(), &"x".into(), &"pn".into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn exhausted_script_is_a_500() {
    let t = ScriptedTransport::new();
    let c = client(&t);
    let err = c
        .vpc()
        .get_private_network(&Region::new("fr-par").unwrap(), &"x".into())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(t.remaining(), 0);
}

/// Reconcilers run on multi-threaded runtimes: every future must be `Send`.
#[test]
fn futures_are_send_and_types_are_sync() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Send + Sync>() {}
    sync::<Client>();
    sync::<Error>();
    sync::<kura_scaleway::sim::Simulator>();
    let c = client(&ScriptedTransport::new());
    let zone = Zone::new("fr-par-1").unwrap();
    let region = zone.region();
    let id = "x".into();
    send(&c.instance().get_server(&zone, &id));
    send(&c.instance().delete_server_step(&zone, &id));
    send(
        &c.instance()
            .delete_server_and_wait(&zone, &id, kura_scaleway::WaitOptions::INSTANCE),
    );
    send(&c.instance().ensure_private_nic(&zone, &id, &"pn".into()));
    send(
        &c.vpc()
            .ensure_private_network(&region, &"p".into(), "n", None, &[]),
    );
    send(
        &c.baremetal()
            .ensure_pn_attached(&zone, &"s".into(), &"pn".into()),
    );
    send(&c.baremetal().wait_for_install(
        &zone,
        &"s".into(),
        kura_scaleway::WaitOptions::BAREMETAL,
    ));
    send(&c.ipam().list_all_ips(&region, &ListIpsRequest::default()));
}
