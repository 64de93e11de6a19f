//! The controllers: both machine kinds watched with kube-runtime, each
//! reconciliation delegated to [`crate::instance::reconcile`] or
//! [`crate::elastic_metal::reconcile`].

use std::convert::Infallible;
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::context::{Context, Next, SshRunner, requeue};
use crate::crd::{ScalewayElasticMetalMachine, ScalewayInstanceMachine};
use crate::kube_impl::KubeClient;

fn action(next: Next) -> Action {
    match next {
        Next::Requeue(d) => Action::requeue(d),
        Next::Wait => Action::await_change(),
    }
}

async fn reconcile_instance<S: SshRunner>(
    obj: Arc<ScalewayInstanceMachine>,
    ctx: Arc<Context<KubeClient, S>>,
) -> Result<Action, Infallible> {
    Ok(action(
        crate::instance::reconcile(&ctx, (*obj).clone()).await,
    ))
}

async fn reconcile_elastic_metal<S: SshRunner>(
    obj: Arc<ScalewayElasticMetalMachine>,
    ctx: Arc<Context<KubeClient, S>>,
) -> Result<Action, Infallible> {
    Ok(action(
        crate::elastic_metal::reconcile(&ctx, (*obj).clone()).await,
    ))
}

fn error_policy<T, S>(_: Arc<T>, _: &Infallible, _: Arc<Context<KubeClient, S>>) -> Action {
    Action::requeue(requeue::API_ERROR)
}

/// Runs both controllers until the watch streams end (they do not, unless
/// the process is asked to stop).
pub async fn run<S: SshRunner>(client: kube::Client, ctx: Arc<Context<KubeClient, S>>) {
    let instances = Controller::new(
        Api::<ScalewayInstanceMachine>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile_instance, error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "instance controller");
        }
    });
    let metals = Controller::new(
        Api::<ScalewayElasticMetalMachine>::all(client),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile_elastic_metal, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "elastic metal controller");
        }
    });
    tokio::join!(instances, metals);
}
