//! Retries, idempotency and fault injection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Method;
use kura_scaleway::sim::{BillableKind, Fault, Simulator};
use kura_scaleway::{
    Client, CommercialType, CreateServerRequest, Error, RetryPolicy, TransportErrorKind, Zone,
};

fn zone() -> Zone {
    Zone::new("fr-par-1").unwrap()
}

async fn request(client: &Client, sim: &Simulator, name: &str) -> CreateServerRequest {
    let ty = CommercialType::new("PRO2-S");
    let image = client
        .marketplace()
        .find_local_image(&zone(), "ubuntu_noble", &ty, "instance_sbs")
        .await
        .unwrap();
    CreateServerRequest::new(name, ty, image.id, sim.project_id())
}

#[tokio::test]
async fn a_429_without_body_is_retried_for_gets() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let fault = sim.inject(Fault::on(Method::GET, "/servers").rate_limit());
    let servers = client
        .instance()
        .list_all_servers(&zone(), &Default::default())
        .await
        .unwrap();
    assert!(servers.is_empty());
    assert_eq!(sim.fault_fired(fault), 1);
    assert_eq!(sim.count_requests(&Method::GET, "/servers"), 2);
    // The retry waited on the virtual clock.
    assert!(sim.now() > Duration::ZERO);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    sim.inject(Fault::on(Method::GET, "/servers").rate_limit_with_body(Some(7)));
    client
        .instance()
        .list_all_servers(&zone(), &Default::default())
        .await
        .unwrap();
    assert_eq!(sim.now(), Duration::from_secs(7));
}

#[tokio::test]
async fn a_503_is_retried_for_gets_until_the_budget_is_spent() {
    let sim = Simulator::with_token("t");
    let client = sim.client_with_retry(RetryPolicy {
        max_retries: 2,
        ..RetryPolicy::default()
    });
    sim.inject(Fault::on(Method::GET, "/private-networks").times(2));
    let region = zone().region();
    let pns = client
        .vpc()
        .list_private_networks(&region, &Default::default())
        .collect_all()
        .await;
    assert!(pns.unwrap().is_empty());

    sim.inject(Fault::on(Method::GET, "/private-networks").times(3));
    let err = client
        .vpc()
        .list_private_networks(&region, &Default::default())
        .collect_all()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Untyped { status: 503, .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(sim.count_requests(&Method::GET, "/private-networks"), 3 + 3);
}

#[tokio::test]
async fn creates_are_never_retried_after_a_5xx() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let req = request(&client, &sim, "runner-1").await;
    sim.inject(
        Fault::on(Method::POST, "/servers")
            .respond(500, r#"{"type":"internal_error","message":"boom"}"#),
    );
    let err = client
        .instance()
        .create_server(&zone(), &req)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(sim.count_requests(&Method::POST, "/servers"), 1);
    assert!(
        sim.ledger()
            .created_of(BillableKind::InstanceServer)
            .is_empty()
    );
}

#[tokio::test]
async fn a_429_on_a_create_is_retried_because_nothing_was_done() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let req = request(&client, &sim, "runner-1").await;
    sim.inject(Fault::on(Method::POST, "/servers").rate_limit());
    client
        .instance()
        .create_server(&zone(), &req)
        .await
        .unwrap();
    assert_eq!(sim.count_requests(&Method::POST, "/servers"), 2);
    assert_eq!(
        sim.ledger().created_of(BillableKind::InstanceServer).len(),
        1
    );

    // Unless the policy says otherwise.
    let strict = sim.client_with_retry(RetryPolicy {
        retry_rate_limited_posts: false,
        ..RetryPolicy::default()
    });
    sim.inject(Fault::on(Method::POST, "/servers").rate_limit());
    let err = strict
        .instance()
        .create_server(&zone(), &req)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooManyRequests { .. }));
}

/// The production failure: a create whose response was lost must not lead to
/// a second paid server. Find-by-name before create makes the retry safe.
#[tokio::test]
async fn dropped_create_response_then_find_by_name_never_makes_two_servers() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let req = request(&client, &sim, "machine-a").await;
    sim.inject(Fault::on(Method::POST, "/servers").drop_response());
    let err = api.create_server(&zone(), &req).await.unwrap_err();
    match &err {
        Error::Transport { source } => assert_eq!(source.kind, TransportErrorKind::Timeout),
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(
        sim.count_requests(&Method::POST, "/servers"),
        1,
        "creates are not retried"
    );
    // The reconciler's next attempt.
    let server = match api
        .find_server_by_name(&zone(), "machine-a", None)
        .await
        .unwrap()
    {
        Some(s) => s,
        None => api.create_server(&zone(), &req).await.unwrap(),
    };
    assert_eq!(server.name, "machine-a");
    assert_eq!(
        sim.ledger()
            .max_concurrent(BillableKind::InstanceServer, "machine-a"),
        1
    );
}

#[tokio::test]
async fn dropped_get_response_is_retried() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    sim.inject(Fault::on(Method::GET, "/local-images").drop_response());
    request(&client, &sim, "x").await;
    assert_eq!(sim.count_requests(&Method::GET, "/local-images"), 2);
}

#[tokio::test]
async fn nth_fault_and_latency() {
    let sim = Simulator::with_token("t");
    let client = sim.client_with_retry(RetryPolicy::none());
    let region = zone().region();
    let fault = sim.inject(Fault::on_any("/private-networks").nth(2).respond(
        403,
        r#"{"type":"quotas_exceeded","message":"quota","details":[{"resource":"private_networks","quota":5,"current":5}]}"#,
    ));
    let vpc = client.vpc();
    vpc.list_private_networks(&region, &Default::default())
        .collect_all()
        .await
        .unwrap();
    let err = vpc
        .list_private_networks(&region, &Default::default())
        .collect_all()
        .await;
    assert!(matches!(err, Err(Error::QuotasExceeded { .. })));
    vpc.list_private_networks(&region, &Default::default())
        .collect_all()
        .await
        .unwrap();
    assert_eq!(sim.fault_fired(fault), 1);

    sim.inject(Fault::on(Method::GET, "/private-networks").latency(Duration::from_secs(3)));
    let before = sim.now();
    vpc.list_private_networks(&region, &Default::default())
        .collect_all()
        .await
        .unwrap();
    assert_eq!(sim.now() - before, Duration::from_secs(3));
    let log = sim.requests();
    assert!(log.iter().filter(|r| r.faulted).count() == 1);
}

#[tokio::test]
async fn dropped_action_response_is_not_retried_and_state_changed() {
    let sim = Simulator::with_token("t");
    let client = sim.client();
    let api = client.instance();
    let req = request(&client, &sim, "m").await;
    let s = api.create_server(&zone(), &req).await.unwrap();
    sim.inject(Fault::on(Method::POST, "/action").drop_response());
    assert!(api.ensure_powered_on(&zone(), &s.id).await.is_err());
    // The poweron was applied: the next ensure is a no-op.
    let step = api.ensure_powered_on(&zone(), &s.id).await.unwrap();
    assert!(
        matches!(step, kura_scaleway::PowerOnStep::AlreadyOn(_)),
        "{step:?}"
    );
    assert_eq!(sim.count_requests(&Method::POST, "/action"), 1);
}
