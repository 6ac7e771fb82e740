//! The `cortex` commands: `serve` (handed to [`crate::serve`]) and the
//! gateway clients `status`, `models`, `load`, `unload`, `pin`, `unpin`.
//!
//! Owns what each command prints and the [`CliError`] that `main` turns
//! into an exit code. HTTP is [`crate::client`]'s, the status table is
//! [`crate::status_table`]'s; nothing here talks to a socket directly.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use cortex_core::fleet::{
    AdminLoadResponse, AdminPinResponse, AdminUnloadResponse, CatalogEntry, FleetView,
};
use cortex_core::neuron_api::ModelState;

use crate::cli::{Command, GatewayArgs, ModelArgs, ModelsArgs, StatusArgs, TargetArgs};
use crate::client::{ClientError, GatewayClient};
use crate::progress::Ticker;
use crate::status_table::{self, TableOptions};

/// How often the `cortex load` indicator is redrawn.
const TICK: Duration = Duration::from_millis(500);

/// Why a command failed; `main` prints it after `cortex: ` on one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("{0:#}")]
    Serve(anyhow::Error),
}

impl CliError {
    /// `cortex status | head` closing the pipe early is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

/// Run one command, writing its result to `out`.
pub fn run(command: Command, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => crate::serve::run(&args).map_err(CliError::Serve),
        Command::Status(args) => status(&args, out),
        Command::Models(args) => models(&args, out),
        Command::Load(args) => load(&args, out),
        Command::Unload(args) => unload(&args, out),
        Command::Pin(args) => set_pinned(&args, true, out),
        Command::Unpin(args) => set_pinned(&args, false, out),
    }
}

fn client(args: &GatewayArgs) -> Result<GatewayClient, CliError> {
    Ok(GatewayClient::new(&args.gateway, args.api_key.as_deref())?)
}

fn status(args: &StatusArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let view = client(&args.gateway)?.fleet()?;
    if args.json {
        return write_json(out, &view);
    }
    let opts = TableOptions {
        color: use_color(
            std::io::stdout().is_terminal(),
            args.no_color,
            std::env::var_os("NO_COLOR"),
        ),
        now_ms: cortex_core::now_unix_ms(),
        width: terminal_width(std::env::var("COLUMNS").ok().as_deref()),
    };
    out.write_all(status_table::render(&view, &opts).as_bytes())?;
    Ok(())
}

fn models(args: &ModelsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let FleetView { models, .. } = client(&args.gateway)?.fleet()?;
    if args.json {
        return write_json(out, &models);
    }
    out.write_all(render_models(&models).as_bytes())?;
    Ok(())
}

fn load(args: &TargetArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = client(&args.gateway)?;
    let ticker = std::io::stderr().is_terminal().then(|| {
        Ticker::start(
            format!("loading {}", args.model),
            TICK,
            Box::new(std::io::stderr()),
        )
    });
    let result = client.load(&args.model, args.node.as_deref());
    // Erase the indicator before anything else is printed, error included.
    if let Some(t) = ticker {
        t.finish();
    }
    out.write_all(load_message(&result?).as_bytes())?;
    Ok(())
}

fn unload(args: &TargetArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let resp = client(&args.gateway)?.unload(&args.model, args.node.as_deref())?;
    out.write_all(unload_message(&resp, args.node.as_deref()).as_bytes())?;
    Ok(())
}

fn set_pinned(args: &ModelArgs, pinned: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let resp = client(&args.gateway)?.set_pinned(&args.model, pinned)?;
    out.write_all(pin_message(&resp).as_bytes())?;
    Ok(())
}

fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Colour only on a terminal, unless `--no-color` or a non-empty `NO_COLOR`
/// (<https://no-color.org>) says otherwise.
fn use_color(
    stdout_is_terminal: bool,
    no_color_flag: bool,
    no_color_env: Option<OsString>,
) -> bool {
    stdout_is_terminal && !no_color_flag && no_color_env.is_none_or(|v| v.is_empty())
}

/// The table width from `COLUMNS`; `0` (no limit) when unset or not a number.
fn terminal_width(columns: Option<&str>) -> usize {
    columns.and_then(|c| c.trim().parse().ok()).unwrap_or(0)
}

/// `loaded MODEL on NODE in 1.2s`, plus `evicted: node/model, …` when the
/// load made room.
fn load_message(r: &AdminLoadResponse) -> String {
    let mut s = if r.load_ms == 0 {
        format!("{} is already loaded on {}\n", r.model, r.node)
    } else {
        format!(
            "loaded {} on {} in {}\n",
            r.model,
            r.node,
            human_ms(r.load_ms)
        )
    };
    if !r.evicted.is_empty() {
        s.push_str(&format!("evicted: {}\n", r.evicted.join(", ")));
    }
    s
}

/// `unloaded MODEL from a, b`, or `MODEL was not loaded [on NODE]`.
fn unload_message(r: &AdminUnloadResponse, node: Option<&str>) -> String {
    if !r.unloaded_from.is_empty() {
        return format!("unloaded {} from {}\n", r.model, r.unloaded_from.join(", "));
    }
    match node {
        Some(n) => format!("{} was not loaded on {n}\n", r.model),
        None => format!("{} was not loaded\n", r.model),
    }
}

/// `pinned MODEL` / `unpinned MODEL`, from the state the gateway reports.
fn pin_message(r: &AdminPinResponse) -> String {
    let verb = if r.pinned { "pinned" } else { "unpinned" };
    format!("{verb} {}\n", r.model)
}

/// `850ms`, `1.2s`, `2m05s`.
fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (ms + 500) / 1_000;
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// The `cortex models` listing: one aligned row per catalogue entry.
fn render_models(models: &[CatalogEntry]) -> String {
    if models.is_empty() {
        return "(no models)\n".to_string();
    }
    let mut rows: Vec<[String; 5]> = vec![[
        "ID".to_string(),
        "ALIASES".to_string(),
        "CONTEXT".to_string(),
        "PINNED".to_string(),
        "WHERE".to_string(),
    ]];
    for m in models {
        let aliases = if m.aliases.is_empty() {
            "-".to_string()
        } else {
            m.aliases.join(", ")
        };
        let pinned = if m.pinned { "yes" } else { "no" };
        // The window agents must be told (see the README's "Clients").
        let context = m
            .context_length
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        rows.push([
            m.id.clone(),
            aliases,
            context,
            pinned.to_string(),
            where_is(m),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `ready on: a, b; loading on: c`, or `loadable on: a, b` for a model
/// loaded nowhere.
fn where_is(m: &CatalogEntry) -> String {
    let mut parts = Vec::new();
    for state in [ModelState::Ready, ModelState::Loading, ModelState::Poisoned] {
        let mut nodes: Vec<&str> = Vec::new();
        for p in m.placements.iter().filter(|p| p.state == state) {
            if !nodes.contains(&p.node.as_str()) {
                nodes.push(&p.node);
            }
        }
        if !nodes.is_empty() {
            parts.push(format!("{} on: {}", state.as_str(), nodes.join(", ")));
        }
    }
    if !parts.is_empty() {
        return parts.join("; ");
    }
    if m.loadable_on.is_empty() {
        "loadable on: (no healthy node)".to_string()
    } else {
        format!("loadable on: {}", m.loadable_on.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use cortex_core::fleet::Placement;

    fn placement(node: &str, state: ModelState) -> Placement {
        Placement {
            node: node.into(),
            state,
            device: 0,
            memory_bytes: 1,
            kv_reserve_bytes: 0,
            loaded_at: 0,
            last_used_at: 0,
            in_flight: 0,
            cached_conversations: 0,
            cached_tokens: 0,
        }
    }

    fn entry(
        id: &str,
        aliases: &[&str],
        placements: Vec<Placement>,
        loadable: &[&str],
    ) -> CatalogEntry {
        CatalogEntry {
            kind: Default::default(),
            id: id.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            pinned: false,
            priority: 0,
            configured: true,
            placements,
            loadable_on: loadable.iter().map(|s| s.to_string()).collect(),
            context_length: None,
        }
    }

    #[test]
    fn models_are_listed_in_aligned_columns() {
        let mut smol = entry(
            "smollm2-135m",
            &["smol", "tiny-chat"],
            vec![
                placement("beast", ModelState::Ready),
                placement("tiny", ModelState::Ready),
                placement("beast", ModelState::Ready),
            ],
            &["beast", "tiny"],
        );
        smol.pinned = true;
        smol.context_length = Some(8192);
        let qwen = entry(
            "qwen2.5-7b-instruct",
            &[],
            vec![
                placement("beast", ModelState::Loading),
                placement("tiny", ModelState::Ready),
                placement("old", ModelState::Poisoned),
            ],
            &["beast"],
        );
        let phi = entry("phi-3-mini", &[], Vec::new(), &["beast", "tiny"]);
        let gone = entry("mistral-7b", &[], Vec::new(), &[]);
        let text = render_models(&[smol, qwen, phi, gone]);
        let expected = "\
ID                   ALIASES          CONTEXT  PINNED  WHERE
smollm2-135m         smol, tiny-chat  8192     yes     ready on: beast, tiny
qwen2.5-7b-instruct  -                -        no      ready on: tiny; loading on: beast; poisoned on: old
phi-3-mini           -                -        no      loadable on: beast, tiny
mistral-7b           -                -        no      loadable on: (no healthy node)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn an_empty_catalogue_says_so() {
        assert_eq!(render_models(&[]), "(no models)\n");
    }

    #[test]
    fn load_messages() {
        let mut r = AdminLoadResponse {
            model: "m".into(),
            node: "beast".into(),
            load_ms: 1_234,
            evicted: Vec::new(),
        };
        assert_eq!(load_message(&r), "loaded m on beast in 1.2s\n");
        r.evicted = vec!["beast/a".into(), "beast/b".into()];
        assert_eq!(
            load_message(&r),
            "loaded m on beast in 1.2s\nevicted: beast/a, beast/b\n"
        );
        r.load_ms = 0;
        r.evicted.clear();
        assert_eq!(load_message(&r), "m is already loaded on beast\n");
    }

    #[test]
    fn load_times_read_naturally() {
        assert_eq!(human_ms(1), "1ms");
        assert_eq!(human_ms(999), "999ms");
        assert_eq!(human_ms(1_000), "1.0s");
        assert_eq!(human_ms(1_249), "1.2s");
        assert_eq!(human_ms(59_940), "59.9s");
        assert_eq!(human_ms(59_960), "1m00s");
        assert_eq!(human_ms(125_000), "2m05s");
    }

    #[test]
    fn unload_messages() {
        let mut r = AdminUnloadResponse {
            model: "m".into(),
            unloaded_from: vec!["a".into(), "b".into()],
        };
        assert_eq!(unload_message(&r, None), "unloaded m from a, b\n");
        r.unloaded_from.clear();
        assert_eq!(unload_message(&r, None), "m was not loaded\n");
        assert_eq!(unload_message(&r, Some("a")), "m was not loaded on a\n");
    }

    #[test]
    fn pin_messages_follow_the_reported_state() {
        let mut r = AdminPinResponse {
            model: "m".into(),
            pinned: true,
        };
        assert_eq!(pin_message(&r), "pinned m\n");
        r.pinned = false;
        assert_eq!(pin_message(&r), "unpinned m\n");
    }

    #[test]
    fn colour_needs_a_terminal_and_no_opt_out() {
        assert!(use_color(true, false, None));
        assert!(!use_color(false, false, None));
        assert!(!use_color(true, true, None));
        assert!(!use_color(true, false, Some("1".into())));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(use_color(true, false, Some("".into())));
    }

    #[test]
    fn width_comes_from_columns() {
        assert_eq!(terminal_width(None), 0);
        assert_eq!(terminal_width(Some("120")), 120);
        assert_eq!(terminal_width(Some("wide")), 0);
    }

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        let e = CliError::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        let e = CliError::Output(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(!e.is_broken_pipe());
    }
}
