//! Property tests: the simulator's Instance state machine against a model of
//! `allowed_actions`, and the delete helper from any reachable state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kura_scaleway::sim::{BillableKind, Simulator};
use kura_scaleway::{
    CommercialType, CreateServerRequest, Error, ServerAction, ServerState, WaitOptions, Zone,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Action(ServerAction),
    Delete,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop_oneof![
            Just(ServerAction::Poweron),
            Just(ServerAction::Poweroff),
            Just(ServerAction::StopInPlace),
            Just(ServerAction::Reboot),
            Just(ServerAction::Terminate),
            Just(ServerAction::Backup),
        ]
        .prop_map(Op::Action),
        Just(Op::Delete),
        (0u64..90).prop_map(Op::Advance),
    ]
}

/// The reference table of allowed actions per state.
fn model_allowed(state: &ServerState, detail: &str) -> Vec<ServerAction> {
    use ServerAction as A;
    match state {
        ServerState::Stopped => vec![A::Poweron, A::Backup],
        ServerState::Starting => vec![A::StopInPlace, A::Backup],
        ServerState::Running => vec![
            A::Poweroff,
            A::Terminate,
            A::Reboot,
            A::StopInPlace,
            A::Backup,
        ],
        ServerState::Stopping if detail == "terminating" => vec![],
        ServerState::Stopping => vec![A::StopInPlace, A::Backup],
        ServerState::StoppedInPlace => {
            vec![A::Poweron, A::Poweroff, A::Terminate, A::Reboot, A::Backup]
        }
        _ => vec![],
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn instance_state_machine_matches_the_allowed_actions_model(ops in proptest::collection::vec(op(), 1..25)) {
        run(async {
            let sim = Simulator::with_token("t");
            let client = sim.client();
            let api = client.instance();
            let zone = Zone::new("fr-par-1").unwrap();
            let ty = CommercialType::new("PRO2-S");
            let image = client.marketplace().find_local_image(&zone, "ubuntu_noble", &ty, "instance_sbs").await.unwrap();
            let s = api.create_server(&zone, &CreateServerRequest::new("p", ty, image.id, sim.project_id())).await.unwrap();
            let mut gone = false;
            for op in ops {
                let before = match api.get_server(&zone, &s.id).await {
                    Ok(server) => server,
                    Err(e) if e.is_not_found() => { gone = true; break; }
                    Err(e) => panic!("{e:?}"),
                };
                // Reported allowed_actions always follow the table.
                prop_assert_eq!(&before.allowed_actions, &model_allowed(&before.state, &before.state_detail));
                match op {
                    Op::Advance(secs) => sim.advance(Duration::from_secs(secs)),
                    Op::Delete => {
                        let r = api.delete_server(&zone, &s.id).await;
                        prop_assert_eq!(r.is_ok(), before.state == ServerState::Stopped, "{:?} {:?}", before.state, r);
                        if r.is_ok() { gone = true; break; }
                        prop_assert!(matches!(r, Err(Error::InvalidRequest { .. })), "{:?}", r);
                    }
                    Op::Action(a) => {
                        let r = api.server_action(&zone, &s.id, a.clone()).await;
                        let allowed = before.allowed_actions.contains(&a);
                        prop_assert_eq!(r.is_ok(), allowed, "{:?} in {:?}: {:?}", a, before.state, r);
                        if !allowed {
                            prop_assert!(matches!(r, Err(Error::InvalidRequest { status: 400, .. })), "{:?}", r);
                        } else {
                            let after = api.get_server(&zone, &s.id).await.unwrap();
                            let expected = match a {
                                ServerAction::Poweron | ServerAction::Reboot => ServerState::Starting,
                                ServerAction::Backup => before.state.clone(),
                                _ => ServerState::Stopping,
                            };
                            prop_assert_eq!(after.state, expected);
                        }
                    }
                }
                // A running server has its dynamic IP; a stopped one has none.
                if let Ok(now) = api.get_server(&zone, &s.id).await {
                    if now.state == ServerState::Running { prop_assert!(!now.public_ips.is_empty()); }
                    if now.state == ServerState::Stopped { prop_assert!(now.public_ips.is_empty()); }
                }
            }
            if !gone {
                // The delete helper ends with the server gone from any reachable state.
                api.delete_server_and_wait(&zone, &s.id, WaitOptions::INSTANCE).await.unwrap();
            }
            prop_assert!(api.get_server(&zone, &s.id).await.unwrap_err().is_not_found());
            let ledger = sim.ledger();
            prop_assert!(ledger.live_of(BillableKind::InstanceServer).is_empty());
            prop_assert!(ledger.live_of(BillableKind::PublicIp).is_empty());
            // The helper never sent a refused action.
            Ok(())
        })?;
    }
}
