//! Leader election on a Lease (kube-lease-manager): the reconcilers run only while this
//! process holds it, and a standby takes over within the lease duration when the leader goes
//! away. Losing the Lease stops the work; stopping releases the Lease at once.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

use crate::{Context, Error};

/// Run `work` each time this process becomes the leader, until `stopping` is cancelled; the
/// token `work` gets is cancelled when the Lease is lost.
pub async fn while_leading<F, Fut>(
    ctx: &Context,
    stopping: CancellationToken,
    mut work: F,
) -> Result<(), Error>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let election = &ctx.config.controller.leader_election;
    let duration = Duration::from(election.lease_duration).as_secs().max(3);
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("privateer-{}-{}", hostname(), std::process::id()));
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), &election.lease_name)
        .with_namespace(&ctx.config.namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tokio::select! {
            () = stopping.cancelled() => break,
            changed = leader.wait_for(|is_leader| *is_leader) => if changed.is_err() { break },
        }
        tracing::info!(%identity, "holding the lease: reconciling");
        let term = stopping.child_token();
        let mut watch = leader.clone();
        let lost = {
            let term = term.clone();
            tokio::spawn(async move {
                let _ = watch.wait_for(|is_leader| !*is_leader).await;
                term.cancel();
            })
        };
        work(term).await;
        lost.abort();
        if stopping.is_cancelled() {
            break;
        }
        tracing::warn!(%identity, "lost the lease: standing by");
    }
    // Closing the channel ends the lease task, which releases the lease for a standby.
    drop(leader);
    let _ = lease_task.await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
