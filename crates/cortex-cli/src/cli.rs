//! The shape of the `cortex` command line: flags, subcommands, their
//! defaults and environment variables (clap derive).
//!
//! Owns parsing and the checks clap can do on a single value (a model id,
//! a gateway URL). It performs no I/O and runs no command: that is
//! `commands` (and `serve` for `cortex serve`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cortex_core::model_id::{is_valid_model_id, MAX_MODEL_ID_LEN};
use cortex_core::HumanDuration;
use neuron::logging::LogFormat;

/// Where `cortex` looks for the gateway when `--gateway` is not given.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:31313";

#[derive(Debug, Parser)]
#[command(
    name = "cortex",
    version,
    about = "cortex: an OpenAI + Anthropic compatible gateway in front of a fleet of neuron inference daemons",
    propagate_version = true
)]
pub struct Cli {
    /// Log line format (logs go to stderr; level from RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "CORTEX_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway (embedded mode with a local neuron when no config exists).
    Serve(ServeArgs),
    /// Show nodes and models as a table (or JSON).
    Status(StatusArgs),
    /// List the model catalogue and where each model lives.
    Models(ModelsArgs),
    /// Load a model (waits until it is ready).
    Load(TargetArgs),
    /// Unload a model (from one node, or from everywhere).
    Unload(TargetArgs),
    /// Pin a model: the evictor never unloads it.
    Pin(ModelArgs),
    /// Unpin a model.
    Unpin(ModelArgs),
}

/// `cortex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// cortex.toml (default: /etc/cortex/cortex.toml when it exists, else embedded mode).
    #[arg(long, env = "CORTEX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Embedded mode: the directory of model files (default: ./models).
    #[arg(long, env = "CORTEX_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, default_value = "30s", env = "CORTEX_SHUTDOWN_GRACE")]
    pub shutdown_grace: HumanDuration,
    /// API listen address (overrides `gateway.listen`; embedded default 127.0.0.1:31313).
    #[arg(long, env = "CORTEX_LISTEN")]
    pub listen: Option<String>,
    /// Metrics listen address (overrides `gateway.metrics_listen`; embedded default 127.0.0.1:31314).
    #[arg(long, env = "CORTEX_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Embedded mode: the in-process neuron's listen address (default 127.0.0.1:13131).
    #[arg(long, env = "CORTEX_NEURON_LISTEN")]
    pub neuron_listen: Option<String>,
}

/// How to reach the gateway; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Base URL of the gateway.
    #[arg(long, env = "CORTEX_GATEWAY", default_value = DEFAULT_GATEWAY, value_parser = parse_gateway)]
    pub gateway: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "CORTEX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// `cortex status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Print the fleet as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
    /// No colours, even on a terminal (so does a non-empty NO_COLOR).
    #[arg(long)]
    pub no_color: bool,
}

/// `cortex models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Print the catalogue as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `cortex load` and `cortex unload`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Model id or alias.
    #[arg(value_name = "MODEL", value_parser = parse_model_id)]
    pub model: String,
    /// Only this node (default: the gateway chooses for load, every node for unload).
    #[arg(long)]
    pub node: Option<String>,
}

/// `cortex pin` and `cortex unpin`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Model id or alias.
    #[arg(value_name = "MODEL", value_parser = parse_model_id)]
    pub model: String,
}

/// A model name goes into a URL path, so only accept what an id may be;
/// that also makes percent-encoding unnecessary.
fn parse_model_id(s: &str) -> Result<String, String> {
    if is_valid_model_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "not a model id (letters, digits and . _ - : only, starting with a letter or digit, \
             no \"..\", at most {MAX_MODEL_ID_LEN} characters)"
        ))
    }
}

/// An `http://` URL, kept without its trailing `/` so paths can be
/// appended. The gateway speaks plain HTTP and this client is built
/// without TLS, so `https://` is refused here rather than failing later.
fn parse_gateway(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() == "https" {
        return Err("https is not supported (the gateway speaks plain HTTP; put TLS in front of it and use http:// from inside)".to_string());
    }
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err("expected http://HOST[:PORT]".to_string());
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cortex").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    #[test]
    fn command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults() {
        let Command::Serve(a) = command(&["serve"]) else {
            panic!("not serve")
        };
        assert_eq!(a.config, None);
        assert_eq!(a.models_dir, None);
        assert_eq!(a.shutdown_grace, HumanDuration::from_secs(30));
    }

    #[test]
    fn serve_flags() {
        let Command::Serve(a) = command(&[
            "serve",
            "--config",
            "/tmp/c.toml",
            "--models-dir",
            "/m",
            "--shutdown-grace",
            "1m30s",
        ]) else {
            panic!("not serve")
        };
        assert_eq!(a.config, Some(PathBuf::from("/tmp/c.toml")));
        assert_eq!(a.models_dir, Some(PathBuf::from("/m")));
        assert_eq!(a.shutdown_grace, HumanDuration::from_secs(90));
    }

    #[test]
    fn serve_rejects_a_bad_grace() {
        let e = parse(&["serve", "--shutdown-grace", "soon"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn log_format_is_global_and_defaults_to_text() {
        assert_eq!(parse(&["status"]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            parse(&["--log-format", "json", "status"])
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert_eq!(
            parse(&["status", "--log-format", "json"])
                .unwrap()
                .log_format,
            LogFormat::Json
        );
        assert!(parse(&["--log-format", "xml", "status"]).is_err());
    }

    #[test]
    fn status_defaults() {
        let Command::Status(a) = command(&["status"]) else {
            panic!("not status")
        };
        assert_eq!(a.gateway.gateway, DEFAULT_GATEWAY);
        assert_eq!(a.gateway.api_key, None);
        assert!(!a.json);
        assert!(!a.no_color);
    }

    #[test]
    fn status_flags() {
        let Command::Status(a) = command(&[
            "status",
            "--json",
            "--no-color",
            "--gateway",
            "http://gw:8080/",
            "--api-key",
            "sk-1",
        ]) else {
            panic!("not status")
        };
        assert!(a.json);
        assert!(a.no_color);
        assert_eq!(a.gateway.gateway, "http://gw:8080");
        assert_eq!(a.gateway.api_key.as_deref(), Some("sk-1"));
    }

    #[test]
    fn gateway_must_be_an_http_url() {
        for bad in ["gw:8080", "ftp://gw", "https://gw", "not a url", ""] {
            let e = parse(&["status", "--gateway", bad]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn models_flags() {
        let Command::Models(a) = command(&["models"]) else {
            panic!("not models")
        };
        assert!(!a.json);
        let Command::Models(a) = command(&["models", "--json"]) else {
            panic!("not models")
        };
        assert!(a.json);
    }

    #[test]
    fn load_and_unload_take_a_model_and_an_optional_node() {
        let Command::Load(a) = command(&["load", "smollm2-135m"]) else {
            panic!("not load")
        };
        assert_eq!(a.model, "smollm2-135m");
        assert_eq!(a.node, None);
        let Command::Load(a) = command(&["load", "qwen2.5:7b", "--node", "beast"]) else {
            panic!("not load")
        };
        assert_eq!(a.model, "qwen2.5:7b");
        assert_eq!(a.node.as_deref(), Some("beast"));
        let Command::Unload(a) = command(&["unload", "m", "--node", "tiny"]) else {
            panic!("not unload")
        };
        assert_eq!(a.model, "m");
        assert_eq!(a.node.as_deref(), Some("tiny"));
    }

    #[test]
    fn pin_and_unpin_take_a_model() {
        let Command::Pin(a) = command(&["pin", "m1"]) else {
            panic!("not pin")
        };
        assert_eq!(a.model, "m1");
        let Command::Unpin(a) = command(&["unpin", "m1"]) else {
            panic!("not unpin")
        };
        assert_eq!(a.model, "m1");
        assert!(parse(&["pin", "m1", "--node", "x"]).is_err());
    }

    #[test]
    fn a_model_is_required() {
        for cmd in ["load", "unload", "pin", "unpin"] {
            let e = parse(&[cmd]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{cmd}");
        }
    }

    #[test]
    fn invalid_model_ids_are_rejected() {
        let long = "a".repeat(MAX_MODEL_ID_LEN + 1);
        for bad in [
            "../etc/passwd",
            "a/b",
            "http://x",
            "has space",
            "-dash-first",
            "a..b",
            "",
            long.as_str(),
        ] {
            for cmd in ["load", "unload", "pin", "unpin"] {
                let e = parse(&[cmd, "--", bad]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::ValueValidation, "{cmd} {bad:?}");
            }
        }
    }

    #[test]
    fn a_subcommand_is_required_and_unknown_flags_fail() {
        assert!(parse(&[]).is_err());
        assert_eq!(
            parse(&["status", "--bogus"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn help_and_version_are_clap_errors_of_their_own_kind() {
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert_eq!(
            parse(&["--version"]).unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
    }
}
