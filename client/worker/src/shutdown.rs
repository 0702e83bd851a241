//! Shutdown requests: any future the caller hands to `Worker::run` (the CLI's is SIGTERM or
//! ctrl-c), turned into a flag that every part of the worker can wait on any number of times.

use std::future::Future;

use tokio::sync::watch;

/// A shutdown request that can be awaited repeatedly and checked without waiting.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Watches `signal` in the background; the request stands once it resolves.
    pub fn spawn(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = signal => {
                    let _ = tx.send(true);
                }
                // Nobody listens any more (the worker returned): stop watching.
                () = tx.closed() => {}
            }
        });
        Shutdown { requested: rx }
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once shutdown is requested (at once if it already was).
    pub async fn requested(&mut self) {
        // An error means the watcher task is gone without a request: never resolve.
        if self.requested.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM or SIGINT (ctrl-c), whichever comes first. The handlers are installed now, so a
/// signal that arrives before the future is first polled is not lost.
pub fn terminate_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_request_is_seen_by_every_clone_any_number_of_times() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut shutdown = Shutdown::spawn(async move {
            let _ = rx.await;
        });
        let mut other = shutdown.clone();
        assert!(!shutdown.is_requested());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), shutdown.requested())
            .await
            .unwrap();
        shutdown.requested().await;
        other.requested().await;
        assert!(other.is_requested());
    }

    #[tokio::test]
    async fn a_signal_future_that_never_fires_never_requests() {
        let mut shutdown = Shutdown::spawn(std::future::pending());
        let waited = tokio::time::timeout(Duration::from_millis(100), shutdown.requested()).await;
        assert!(waited.is_err());
        assert!(!shutdown.is_requested());
    }
}
