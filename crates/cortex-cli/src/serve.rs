//! `cortex serve`: the gateway from a config file, or — with no `--config`
//! and no `/etc/cortex/cortex.toml` — embedded mode: the gateway and an
//! in-process neuron on loopback, serving every model in `./models` (or
//! `$CORTEX_MODELS_DIR`). The gateway reaches the embedded neuron over
//! loopback HTTP like any other neuron: one code path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cortex_core::config::{GatewayConfig, ModelsFile, NeuronConfig, NeuronEndpoint};
use cortex_core::HumanDuration;
use cortex_gateway::{Gateway, GatewaySettings};
use neuron::{Neuron, RunOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::ServeArgs;

const DEFAULT_CONFIG: &str = "/etc/cortex/cortex.toml";
const EMBEDDED_API: &str = "127.0.0.1:31313";
const EMBEDDED_METRICS: &str = "127.0.0.1:31314";
const EMBEDDED_NEURON: &str = "127.0.0.1:13131";

/// Run until SIGINT/SIGTERM; then drain and exit.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = config_path(args);
    if config.is_none() {
        // Embedded mode hosts a neuron: tune the allocator before the
        // runtime starts its threads (see `neuron::sys`).
        neuron::sys::tune_allocator();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(args, config))
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Resolves for every receiver when SIGINT or SIGTERM arrives.
fn shutdown_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        neuron::server::shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The gateway config to run with; `None` means embedded mode.
fn config_path(args: &ServeArgs) -> Option<PathBuf> {
    args.config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()))
}

async fn serve(args: &ServeArgs, config: Option<PathBuf>) -> anyhow::Result<()> {
    let grace = args.shutdown_grace.get();
    match config {
        Some(path) => {
            let mut settings = GatewaySettings::load(&path)?;
            override_listen(&mut settings.config, args)?;
            run_gateway(settings, grace, shutdown_channel()).await
        }
        None => embedded(args, grace).await,
    }
}

fn override_listen(cfg: &mut GatewayConfig, args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(l) = &args.listen {
        cfg.gateway.listen = l.clone();
    }
    if let Some(l) = &args.metrics_listen {
        cfg.gateway.metrics_listen = l.clone();
    }
    cfg.validate("command line")?;
    Ok(())
}

async fn run_gateway(
    settings: GatewaySettings,
    grace: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let api = bind(&settings.config.gateway.listen, "gateway API").await?;
    let metrics = bind(&settings.config.gateway.metrics_listen, "gateway metrics").await?;
    Gateway::start(settings)
        .run(api, metrics, wait(stop), grace)
        .await?;
    Ok(())
}

async fn embedded(args: &ServeArgs, grace: Duration) -> anyhow::Result<()> {
    let dir = args
        .models_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("models"));
    let found = neuron::paths::scan(std::slice::from_ref(&dir));
    if found.is_empty() {
        eprintln!(
            "cortex: no model in {}; fetch the default one with: scripts/fetch-model {}",
            dir.display(),
            dir.display()
        );
    }
    tracing::info!(
        models_dir = %dir.display(),
        models = ?found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        "embedded mode: gateway + in-process neuron on loopback"
    );

    let neuron_listener = bind(
        args.neuron_listen.as_deref().unwrap_or(EMBEDDED_NEURON),
        "embedded neuron",
    )
    .await?;
    let neuron_addr = neuron_listener.local_addr()?;
    let neuron = Neuron::build(
        embedded_neuron_config(&dir),
        RunOptions {
            fault_injection: false,
            shutdown_grace: grace,
        },
    )
    .map_err(anyhow::Error::msg)?;

    let mut cfg = GatewayConfig::default();
    cfg.gateway.listen = EMBEDDED_API.into();
    cfg.gateway.metrics_listen = EMBEDDED_METRICS.into();
    cfg.gateway.poll_interval = HumanDuration::from_secs(1);
    cfg.neurons = vec![NeuronEndpoint {
        name: "local".into(),
        endpoint: format!("http://{neuron_addr}"),
        admin_token: None,
    }];
    override_listen(&mut cfg, args)?;
    // Embedded mode has no configuration file to keep pins beside.
    let settings = GatewaySettings::new(cfg, ModelsFile::default());

    let stop = shutdown_channel();
    let neuron_task = tokio::spawn(neuron.run(neuron_listener, wait(stop.clone())));
    let gateway = run_gateway(settings, grace, stop).await;
    let neuron = neuron_task
        .await
        .context("the embedded neuron task failed")?;
    gateway?;
    neuron.context("the embedded neuron failed")?;
    Ok(())
}

fn embedded_neuron_config(dir: &Path) -> NeuronConfig {
    NeuronConfig {
        name: Some("local".into()),
        listen: EMBEDDED_NEURON.into(),
        models_dirs: vec![dir.display().to_string()],
        ..NeuronConfig::default()
    }
}
