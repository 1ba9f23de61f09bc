//! `mana-ai`: the background runner of the AI workbench.
//!
//! Subcommands: `serve` (default), `dev` (private PostgreSQL + serve), `config`,
//! `migrate`, `tick`, and the operator commands `keys generate` and `grant mint`.
//! See `mana-ai --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mana_ai::{app, config, dev, ops_cli};

#[derive(Parser)]
#[command(
    name = "mana-ai",
    version,
    about = "Background runner of the AI workbench: projects the sync event log, plans due missions with an LLM, writes plans back.",
    long_about = "Background runner of the AI workbench.\n\nConfiguration comes from the environment (PORT, SYNC_DATABASE_URL, MANA_LLM_URL, MANA_SERVICE_KEY, TICK_INTERVAL_MS, TICK_ENABLED, MANA_API_URL, MANA_RESEARCH_URL, MANA_AI_DEEP_RESEARCH_ENABLED, MANA_AI_PRIVATE_KEY_PEM, POLICY_MODE, MANA_AI_COMPACT_MAX_CTX, MANA_AI_BIND, ...). Run `mana-ai config` to see the effective values."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against SYNC_DATABASE_URL (the default command).
    Serve,
    /// Start a private PostgreSQL cluster under a data dir, set it up, and serve.
    Dev(dev::DevArgs),
    /// Print the effective configuration (secrets masked) and exit.
    Config,
    /// Run the schema migration and exit.
    Migrate,
    /// Run one tick pass against the configured database, print its stats and exit.
    Tick,
    /// Key pair for mission grants (`keys generate`).
    Keys(ops_cli::KeysArgs),
    /// Mission grants (`grant mint`).
    Grant(ops_cli::GrantArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands need no service configuration.
    let ops = match &cli.command {
        Some(Command::Keys(k)) => Some(ops_cli::run_keys(k)),
        Some(Command::Grant(g)) => Some(ops_cli::run_grant(g)),
        _ => None,
    };
    if let Some(result) = ops {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mana-ai: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match config::Config::from_process_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mana-ai: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        for (k, v) in cfg.describe() {
            println!("{k}={v}");
        }
        return ExitCode::SUCCESS;
    }
    app::init_logging(cfg.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mana-ai: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => app::serve(cfg).await,
            Command::Dev(args) => dev::run(cfg, args).await,
            Command::Migrate => app::migrate_only(&cfg).await,
            Command::Tick => app::tick_once(cfg).await,
            Command::Config | Command::Keys(_) | Command::Grant(_) => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mana-ai: {e:#}");
            ExitCode::FAILURE
        }
    }
}
