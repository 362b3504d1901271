//! Telling every task of a node that it is shutting down.
//!
//! The server owns the sending side ([`Trigger`]); every long-lived task gets
//! a [`Shutdown`] of its own and selects on [`Shutdown::recv`] next to its
//! work, so nothing has to reach back into the server to learn it should stop.

use tokio::sync::watch;

/// Fires the shutdown of every [`Shutdown`] made from it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// One task's view of the node's shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger and the first listener to it.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every listener; those created later learn it at once.
    pub fn fire(&self) {
        // An error only means nobody listens any more.
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Whether the shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the shutdown has begun (at once if it has).
    /// Cancel-safe, so it can sit in a `select!` next to the task's work.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_learns_of_the_shutdown_even_a_late_one() {
        let (trigger, mut early) = channel();
        let late_copy = early.clone();
        assert!(!early.is_shutdown());
        trigger.fire();
        early.recv().await;
        let mut late = late_copy;
        assert!(late.is_shutdown());
        late.recv().await;
    }
}
