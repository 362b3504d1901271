//! The broker proper: accepts connections and ties codec, sessions, router,
//! store and metrics together.

use crate::config::Config;

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let _ = config;
    todo!("server")
}
