//! The one listener for the signals that end a command politely: SIGINT and
//! SIGTERM (and SIGHUP for the dashboard, whose terminal may go away).
//!
//! Made once, before the loop it ends: a signal that arrives while a batch
//! is being processed is kept for the next `recv` (a fresh `ctrl_c()` per
//! iteration would miss it, and the run would go on).

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Stop {
    int: Signal,
    term: Signal,
    hup: Option<Signal>,
}

impl Stop {
    /// SIGINT and SIGTERM.
    pub fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: None,
        })
    }

    /// SIGINT, SIGTERM and SIGHUP.
    pub fn with_hangup() -> Result<Self> {
        let mut stop = Self::new()?;
        stop.hup = Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?);
        Ok(stop)
    }

    /// Until one of the signals arrives (cancel-safe: a signal is not lost
    /// when another branch of a `select!` wins).
    pub async fn recv(&mut self) {
        let hup = async {
            match &mut self.hup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = hup => {}
        }
    }
}
