//! The O_DIRECT engine (placeholder until the engine lands).
use clap::Args;

/// Arguments of `pintrace engine`.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {}

/// Run the engine as a command; returns the process exit code.
pub fn run_cli(_args: &EngineArgs) -> anyhow::Result<u8> {
    anyhow::bail!("the engine is not built yet")
}
