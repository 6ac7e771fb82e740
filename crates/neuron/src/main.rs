//! `neuron`: one node of a cortex fleet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use cortex_core::config::NeuronConfig;
use cortex_core::{ByteSize, HumanDuration};
use neuron::logging::{self, LogFormat};
use neuron::{Neuron, RunOptions};

const DEFAULT_CONFIG: &str = "/etc/cortex/neuron.toml";

#[derive(Parser)]
#[command(
    name = "neuron",
    version,
    about = "cortex neuron: in-process LLM inference for one host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the neuron API.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// neuron.toml (default: /etc/cortex/neuron.toml when it exists).
    #[arg(long, env = "NEURON_CONFIG")]
    config: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long, env = "NEURON_NAME")]
    name: Option<String>,
    /// Listen address (default 0.0.0.0:13131).
    #[arg(long, env = "NEURON_LISTEN")]
    listen: Option<String>,
    /// A directory of model files; repeat for several.
    #[arg(long = "models-dir", env = "NEURON_MODELS_DIRS", value_delimiter = ',')]
    models_dirs: Vec<String>,
    /// What each device may give to models: bytes, or 350MiB, 24GiB, …
    #[arg(long, env = "NEURON_MEMORY_BUDGET")]
    memory_budget: Option<ByteSize>,
    /// Require `Authorization: Bearer TOKEN` on lifecycle routes.
    #[arg(long, env = "NEURON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "NEURON_THREADS")]
    threads: Option<usize>,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, default_value = "30s")]
    shutdown_grace: HumanDuration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "NEURON_LOG_FORMAT")]
    log_format: LogFormat,
    /// Tests only: honour the x-neuron-inject-fault header.
    #[arg(long, hide = true, env = "NEURON_ENABLE_FAULT_INJECTION")]
    enable_fault_injection: bool,
}

fn load_config(args: &ServeArgs) -> anyhow::Result<NeuronConfig> {
    let path = match &args.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    };
    let mut cfg = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            NeuronConfig::from_toml(&text, &p.display().to_string())?
        }
        None => NeuronConfig::default(),
    };
    // Flags win over the file.
    if let Some(v) = &args.name {
        cfg.name = Some(v.clone());
    }
    if let Some(v) = &args.listen {
        cfg.listen = v.clone();
    }
    if !args.models_dirs.is_empty() {
        cfg.models_dirs = args.models_dirs.clone();
    }
    if let Some(v) = args.memory_budget {
        cfg.memory_budget = Some(v);
    }
    if let Some(v) = &args.admin_token {
        cfg.admin_token = Some(v.clone());
    }
    if let Some(v) = args.threads {
        cfg.threads = Some(v);
    }
    cfg.validate("command line")?;
    Ok(cfg)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args)?;
    if let Some(t) = cfg.threads {
        // Read by candle's CPU thread pool when it starts.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let neuron = Neuron::build(
        cfg,
        RunOptions {
            fault_injection: args.enable_fault_injection,
            shutdown_grace: args.shutdown_grace.get(),
        },
    )
    .map_err(anyhow::Error::msg)?;
    neuron
        .run(listener, neuron::server::shutdown_signal())
        .await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    logging::init(args.log_format);
    // Before the runtime starts its threads (see `sys`).
    neuron::sys::tune_allocator();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("neuron: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neuron: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
