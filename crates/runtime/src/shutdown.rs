//! Shutdown: one `CancellationToken` for the whole process, cancelled on SIGTERM or Ctrl-C, and a
//! `TaskTracker` so connections can be drained with a deadline. The handle also carries the
//! process's readiness ([`Health`]): whatever is told to stop is also what reports being up.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ops::Health;

/// The shutdown handle every agent gets: cancel it to stop accepting, then `drain`.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
    /// Listeners register here while they accept; `/readyz` reads it.
    pub health: Health,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A child handle: cancelled with the parent, but can also be cancelled alone.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
            health: self.health.clone(),
        }
    }

    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Waits for tracked tasks to end, at most `deadline`. Returns false when tasks were still
    /// running at the deadline (they are abandoned; the queue's leases make that safe).
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The end of every agent's `main`: waits for SIGTERM/Ctrl-C (or for the agent to stop on its
/// own, which is an error), cancels, waits for the agent's task, then drains open sessions
/// until `deadline`.
pub async fn run_until_signal(
    agent: &str,
    shutdown: &Shutdown,
    mut task: tokio::task::JoinHandle<anyhow::Result<()>>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let stopped_early = tokio::select! {
        _ = signal() => None,
        r = &mut task => Some(r),
    };
    if let Some(result) = stopped_early {
        shutdown.cancel();
        let result = result.map_err(|e| anyhow::anyhow!("{agent} task failed: {e}"))?;
        return result.and_then(|()| Err(anyhow::anyhow!("{agent} stopped unexpectedly")));
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    task.await
        .map_err(|e| anyhow::anyhow!("{agent} task failed: {e}"))??;
    if !shutdown.drain(deadline).await {
        tracing::warn!("sessions still open at the drain deadline");
    }
    crate::telemetry::shutdown();
    Ok(())
}
