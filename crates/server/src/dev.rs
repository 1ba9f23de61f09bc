//! `mana-ai dev`: a private PostgreSQL cluster for local use (filled in with the
//! pgcluster crate).

use clap::Args;

use crate::config::Config;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the private cluster lives.
    #[arg(long, default_value = ".mana-ai")]
    pub data_dir: std::path::PathBuf,
    /// Seed a demo user, agent and due mission.
    #[arg(long)]
    pub demo: bool,
}

pub async fn run(_cfg: Config, _args: DevArgs) -> anyhow::Result<()> {
    anyhow::bail!("mana-ai dev is not wired yet")
}
