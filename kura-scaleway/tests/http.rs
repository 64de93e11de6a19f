//! The simulator over real HTTP on loopback, with the reqwest transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Method;
use kura_scaleway::sim::{Fault, Simulator};
use kura_scaleway::transport::HttpTransport;
use kura_scaleway::{
    Client, CommercialType, CreateServerRequest, Error, RetryPolicy, SecretKey, Zone,
};

fn http_client(base: &str, token: &str, sim: &Simulator, retry: RetryPolicy) -> Client {
    Client::builder(SecretKey::new(token))
        .base_url(base)
        .transport(HttpTransport::new(Duration::from_secs(10)).unwrap())
        .clock(sim.clock())
        .retry(retry)
        .build()
        .unwrap()
}

#[tokio::test]
async fn client_talks_to_the_simulator_over_http() {
    let sim = Simulator::with_token("secret");
    let server = sim.serve(0).await.unwrap();
    assert!(server.addr().ip().is_loopback());
    let client = http_client(&server.base_url(), "secret", &sim, RetryPolicy::default());
    let zone = Zone::new("fr-par-1").unwrap();
    let ty = CommercialType::new("PRO2-S");
    let image = client
        .marketplace()
        .find_local_image(&zone, "ubuntu_noble", &ty, "instance_sbs")
        .await
        .unwrap();
    let s = client
        .instance()
        .create_server(
            &zone,
            &CreateServerRequest::new("over-http", ty, image.id, sim.project_id()),
        )
        .await
        .unwrap();
    client
        .instance()
        .set_user_data(&zone, &s.id, "cloud-init", "#cloud-config\n")
        .await
        .unwrap();
    let ud = client
        .instance()
        .get_user_data(&zone, &s.id, "cloud-init")
        .await
        .unwrap();
    assert_eq!(&ud[..], b"#cloud-config\n");
    assert!(
        client
            .instance()
            .get_user_data(&zone, &s.id, "nope")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Bad token.
    let bad = http_client(&server.base_url(), "wrong", &sim, RetryPolicy::none());
    let err = bad.instance().get_server(&zone, &s.id).await.unwrap_err();
    assert!(matches!(err, Error::DeniedAuthentication { .. }), "{err:?}");
    assert!(err.request_id().is_some());

    // A dropped response is a transport error; the GET is retried and succeeds.
    let before = sim.count_requests(&Method::GET, "/servers/");
    sim.inject(Fault::on(Method::GET, "/servers/").drop_response());
    let got = client.instance().get_server(&zone, &s.id).await.unwrap();
    assert_eq!(got.id, s.id);
    assert_eq!(sim.count_requests(&Method::GET, "/servers/") - before, 2);

    // A 429 without body over HTTP.
    sim.inject(Fault::on(Method::GET, "/servers/").rate_limit());
    client.instance().get_server(&zone, &s.id).await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let sim = Simulator::with_token("secret");
    let addr = {
        let server = sim.serve(0).await.unwrap();
        server.addr()
    };
    // The server was dropped: nothing listens any more (the port may be reused,
    // in which case the request fails differently but still fails).
    let client = http_client(
        &format!("http://{addr}"),
        "secret",
        &sim,
        RetryPolicy::none(),
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = client
        .instance()
        .get_server(&Zone::new("fr-par-1").unwrap(), &"x".into())
        .await;
    assert!(err.is_err());
}
