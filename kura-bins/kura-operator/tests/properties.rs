//! Property tests: rendering never panics on any spec, bad specs get typed
//! errors, request classification is total, primary selection invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use kura_ca::time::OffsetDateTime;
use kura_operator::crd::{KuraInstance, KuraInstanceSpec};
use kura_operator::primary::{Candidate, RolloutStatus, Routability, choose};
use kura_operator::rbac::request_permission;
use kura_operator::render::{LiveObjects, RenderOptions, render};
use kura_operator::{Error, SpecError};
use proptest::prelude::*;

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        ".{0,30}",
        Just(String::new()),
        "[0-9./:a-f]{1,25}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn render_never_panics_and_fails_only_with_spec_errors(
        name in "[a-z][a-z0-9-]{0,30}",
        account in arb_text(),
        region in arb_text(),
        storage in proptest::option::of(arb_text()),
        cidrs in proptest::collection::vec(arb_text(), 0..4),
        replicas in proptest::option::of(-3i32..8),
        mbps in proptest::option::of(-5i32..5000),
        expose in any::<bool>(),
        host in proptest::option::of(arb_text()),
        annotations in proptest::collection::btree_map(arb_text(), arb_text(), 0..3),
    ) {
        let mut ki = KuraInstance::new(&name, KuraInstanceSpec {
            account_handle: account,
            tenant_id: "1".into(),
            region,
            image: "img".into(),
            replicas,
            storage_size: storage,
            client_cidrs: Some(cidrs),
            egress_guaranteed_mbps: mbps,
            expose_node_port: Some(expose),
            public_host: host,
            pod_annotations: Some(annotations),
            ..KuraInstanceSpec::default()
        });
        ki.metadata.namespace = Some("kura".into());
        match render(&ki, &LiveObjects::default(), None, &RenderOptions::default(), OffsetDateTime::now_utc()) {
            Ok(r) => {
                prop_assert!(r.find("StatefulSet", &name).is_some());
                prop_assert_eq!(r.find("Service", &format!("{name}-external")).is_some(), expose);
                let text = r.to_yaml_stream().unwrap();
                prop_assert!(text.starts_with("---\n"));
            }
            Err(Error::Spec(e)) => prop_assert!(!e.to_string().is_empty()),
            Err(other) => prop_assert!(false, "non-spec error {other}"),
        }
    }

    #[test]
    fn request_classification_is_total(method in "GET|PUT|POST|PATCH|DELETE|HEAD", path in ".{0,80}") {
        let _ = request_permission(&method, &path);
    }

    #[test]
    fn primary_is_current_a_routable_pod_or_zero(
        routable in proptest::collection::vec(any::<bool>(), 1..5),
        current in proptest::option::of(0u32..6),
    ) {
        struct Fixed(BTreeMap<String, RolloutStatus>);
        impl Routability for Fixed {
            fn rollout<'a>(&'a self, ip: &'a str) -> BoxFuture<'a, Option<RolloutStatus>> {
                Box::pin(async move { self.0.get(ip).cloned() })
            }
        }
        let pods: Vec<Candidate> = (0..routable.len() as u32)
            .map(|n| Candidate { name: format!("k-{n}"), ordinal: n, ip: Some(format!("10.0.0.{n}")) })
            .collect();
        let probe = Fixed(routable.iter().enumerate().filter(|(_, r)| **r).map(|(n, _)| (
            format!("10.0.0.{n}"),
            RolloutStatus { ready: true, state: "serving".into(), ring_members: 3, writer_lock_owned: true },
        )).collect());
        let current = current.map(|c| format!("k-{c}"));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let chosen = rt.block_on(choose("k", current.as_deref(), &pods, 3, &probe));
        let ordinal: usize = chosen.trim_start_matches("k-").parse().unwrap();
        let current_routable = current.as_ref().and_then(|c| c.trim_start_matches("k-").parse::<usize>().ok())
            .is_some_and(|c| routable.get(c).copied().unwrap_or(false));
        if current_routable {
            prop_assert_eq!(Some(&chosen), current.as_ref());
        } else if let Some(first) = routable.iter().position(|r| *r) {
            prop_assert_eq!(ordinal, first, "lowest routable ordinal");
        } else {
            prop_assert_eq!(chosen, current.unwrap_or_else(|| "k-0".into()));
        }
    }
}

#[test]
fn spec_errors_name_the_field() {
    let mut ki = KuraInstance::new(
        "kura-x",
        KuraInstanceSpec {
            account_handle: "acme".into(),
            tenant_id: "1".into(),
            region: "r".into(),
            image: "i".into(),
            egress_guaranteed_mbps: Some(-1),
            ..KuraInstanceSpec::default()
        },
    );
    ki.metadata.namespace = Some("kura".into());
    let err = render(
        &ki,
        &LiveObjects::default(),
        None,
        &RenderOptions::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Spec(SpecError::OutOfRange {
                field: "egressGuaranteedMbps",
                ..
            })
        ),
        "{err}"
    );
}
