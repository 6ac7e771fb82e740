//! The human table of `cortex status`: a NODES section (up/down, devices,
//! memory used against budget) and a MODELS section (one row per placement,
//! or one "available on" row for a model loaded nowhere).
//!
//! Owns layout only: it turns a [`FleetView`] into text. Fetching the view,
//! deciding on colour (TTY, `NO_COLOR`) and the terminal width belong to the
//! caller. Colours are raw ANSI codes, added after the column widths are
//! computed, so they never disturb alignment.

use cortex_core::fleet::{CatalogEntry, FleetView, NodeView, Placement};
use cortex_core::neuron_api::{DeviceKind, DeviceStatus, ModelState};
use cortex_core::ByteSize;

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    /// Colour states with ANSI escape codes.
    pub color: bool,
    /// "Now" in unix milliseconds, for "12s ago".
    pub now_ms: u64,
    /// Terminal width in characters; `0` means no limit. When a table is
    /// wider, the memory bars go first, then long cells are cut with `…`
    /// (best effort: ids and states are cut only so far).
    pub width: usize,
}

/// Render the NODES and MODELS sections.
pub fn render(view: &FleetView, opts: &TableOptions) -> String {
    let mut out = String::new();
    out.push_str(&title("NODES", opts.color));
    if view.nodes.is_empty() {
        out.push_str("(no neurons configured)\n");
    } else {
        let mut nodes = nodes_table(view, true);
        if opts.width > 0 && nodes.natural_width() > opts.width {
            nodes = nodes_table(view, false);
        }
        out.push_str(&nodes.render(opts));
    }
    out.push('\n');
    out.push_str(&title("MODELS", opts.color));
    if view.models.is_empty() {
        out.push_str("(no models)\n");
    } else {
        out.push_str(&models_table(view, opts.now_ms).render(opts));
    }
    out
}

/// Width of the memory bar, between the brackets.
const BAR_WIDTH: usize = 20;
/// Space between columns.
const GAP: &str = "  ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Color {
    Green,
    Red,
    Yellow,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "\x1b[32m",
            Color::Red => "\x1b[31m",
            Color::Yellow => "\x1b[33m",
        }
    }
}

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn title(text: &str, color: bool) -> String {
    if color {
        format!("{BOLD}{text}{RESET}\n")
    } else {
        format!("{text}\n")
    }
}

struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            color: None,
        }
    }

    fn colored(text: impl Into<String>, color: Color) -> Self {
        Self {
            text: text.into(),
            color: Some(color),
        }
    }
}

/// How a shrunk column cuts its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Keep the start: `available on: …`.
    End,
    /// Drop `http://`, then keep the end, where host and port are:
    /// `…internal:13131`.
    Url,
}

/// A column that may be cut to fit the width, down to `min` characters.
struct Shrink {
    col: usize,
    min: usize,
    cut: Cut,
}

/// Rows of cells under fixed headers; `shrink` lists the columns that give
/// way, first to last, when the table is too wide.
struct Table {
    headers: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
    shrink: &'static [Shrink],
}

impl Table {
    /// Each column's width: its widest cell or header, in characters.
    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(slot) = w.get_mut(i) {
                    *slot = (*slot).max(cell.text.chars().count());
                }
            }
        }
        w
    }

    fn natural_width(&self) -> usize {
        total(&self.widths())
    }

    fn render(&self, opts: &TableOptions) -> String {
        let mut widths = self.widths();
        let mut cuts: Vec<Option<Cut>> = vec![None; widths.len()];
        if opts.width > 0 && total(&widths) > opts.width {
            // Dropping `http://` loses nothing: do it before cutting anything.
            for s in self.shrink.iter().filter(|s| s.cut == Cut::Url) {
                let compact = self
                    .rows
                    .iter()
                    .filter_map(|row| row.get(s.col))
                    .map(|c| strip_scheme(&c.text).chars().count())
                    .chain(self.headers.get(s.col).map(|h| h.chars().count()))
                    .max();
                if let (Some(w), Some(c), Some(compact)) =
                    (widths.get_mut(s.col), cuts.get_mut(s.col), compact)
                {
                    *w = compact;
                    *c = Some(Cut::Url);
                }
            }
            let mut over = total(&widths).saturating_sub(opts.width);
            for s in self.shrink {
                if over == 0 {
                    break;
                }
                if let (Some(w), Some(c)) = (widths.get_mut(s.col), cuts.get_mut(s.col)) {
                    let by = over.min(w.saturating_sub(s.min));
                    if by > 0 {
                        *w -= by;
                        over -= by;
                        *c = Some(s.cut);
                    }
                }
            }
        }
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::plain(*h)).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                let text = match cuts.get(i).copied().flatten() {
                    Some(cut) => cut_text(&cell.text, w, cut),
                    None => truncate(&cell.text, w),
                };
                let pad = w - text.chars().count();
                match (cell.color, opts.color) {
                    (Some(c), true) => {
                        line.push_str(c.code());
                        line.push_str(&text);
                        line.push_str(RESET);
                    }
                    _ => line.push_str(&text),
                }
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end_matches(' '));
            out.push('\n');
        }
        out
    }
}

fn total(widths: &[usize]) -> usize {
    widths.iter().sum::<usize>() + GAP.len() * widths.len().saturating_sub(1)
}

fn cut_text(text: &str, width: usize, cut: Cut) -> String {
    match cut {
        Cut::End => truncate(text, width),
        Cut::Url => {
            let text = strip_scheme(text);
            let n = text.chars().count();
            if n <= width {
                return text.to_string();
            }
            if width == 0 {
                return String::new();
            }
            let mut out = String::from("…");
            out.extend(text.chars().skip(n + 1 - width));
            out
        }
    }
}

fn strip_scheme(url: &str) -> &str {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
}

/// At most `width` characters; a cut text ends in `…`.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

fn nodes_table(view: &FleetView, bars: bool) -> Table {
    let rows = view
        .nodes
        .iter()
        .map(|n| {
            let models = view
                .models
                .iter()
                .flat_map(|m| &m.placements)
                .filter(|p| p.node == n.name)
                .count();
            vec![
                Cell::plain(&n.name),
                if n.up {
                    Cell::colored("UP", Color::Green)
                } else {
                    Cell::colored("DOWN", Color::Red)
                },
                Cell::plain(&n.endpoint),
                Cell::plain(devices(&n.devices)),
                Cell::plain(memory(&n.devices, bars)),
                Cell::plain(models.to_string()),
            ]
        })
        .collect();
    Table {
        headers: &["NAME", "STATUS", "ENDPOINT", "DEVICES", "MEMORY", "MODELS"],
        rows,
        shrink: &[
            Shrink {
                col: 3,
                min: 10,
                cut: Cut::End,
            },
            Shrink {
                col: 2,
                min: 14,
                cut: Cut::Url,
            },
        ],
    }
}

/// The GPU model without the vendor ("H100 80GB HBM3"); empty for the CPU.
fn gpu_name(d: &DeviceStatus) -> &str {
    match d.kind {
        DeviceKind::Cpu => "",
        DeviceKind::Cuda => d.name.strip_prefix("NVIDIA ").unwrap_or(&d.name).trim(),
    }
}

/// "cpu", "cuda:0 H100", or for alike GPUs "cuda:0,1 H100" and
/// "cuda:0-7 H100".
fn devices(devs: &[DeviceStatus]) -> String {
    if devs.is_empty() {
        return "-".to_string();
    }
    let mut groups: Vec<(DeviceKind, &str, Vec<u32>)> = Vec::new();
    for d in devs {
        let name = gpu_name(d);
        match groups.last_mut() {
            Some((kind, n, indices)) if *kind == d.kind && *n == name => indices.push(d.index),
            _ => groups.push((d.kind, name, vec![d.index])),
        }
    }
    groups
        .iter()
        .map(|(kind, name, indices)| match kind {
            DeviceKind::Cpu => "cpu".to_string(),
            DeviceKind::Cuda => {
                let consecutive = indices.windows(2).all(|w| w[1] == w[0] + 1);
                let list = match (indices.first(), indices.last()) {
                    (Some(a), Some(b)) if indices.len() >= 3 && consecutive => format!("{a}-{b}"),
                    _ => indices
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                };
                if name.is_empty() {
                    format!("cuda:{list}")
                } else {
                    format!("cuda:{list} {name}")
                }
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Budget used against budget over all devices of a node, with a bar.
fn memory(devs: &[DeviceStatus], with_bar: bool) -> String {
    if devs.is_empty() {
        return "-".to_string();
    }
    let used: u64 = devs.iter().map(|d| d.memory_used_bytes).sum();
    let budget: u64 = devs.iter().map(|d| d.memory_budget_bytes).sum();
    let sizes = format!("{} / {}", ByteSize(used).human(), ByteSize(budget).human());
    if with_bar {
        format!("{} {sizes}", bar(used, budget))
    } else {
        sizes
    }
}

/// `[#####...............]`: the used share of `BAR_WIDTH` cells, rounded,
/// with at least one `#` when anything is used.
fn bar(used: u64, budget: u64) -> String {
    let filled = if budget == 0 || used == 0 {
        0
    } else {
        let share = (used as f64 / budget as f64).min(1.0);
        ((share * BAR_WIDTH as f64).round() as usize).clamp(1, BAR_WIDTH)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
}

fn models_table(view: &FleetView, now_ms: u64) -> Table {
    let mut rows = Vec::new();
    for m in &view.models {
        if m.placements.is_empty() {
            rows.push(unplaced_row(m));
        }
        for p in &m.placements {
            rows.push(placement_row(view, m, p, now_ms));
        }
    }
    Table {
        headers: &[
            "MODEL",
            "NODE",
            "STATE",
            "MEMORY",
            "LAST USED",
            "IN FLIGHT",
            "CACHED",
            "PINNED",
        ],
        rows,
        // The state first ("available on: …" lists grow), model ids last:
        // they are what users type.
        shrink: &[
            Shrink {
                col: 2,
                min: 8,
                cut: Cut::End,
            },
            Shrink {
                col: 0,
                min: 16,
                cut: Cut::End,
            },
        ],
    }
}

fn pinned(m: &CatalogEntry) -> Cell {
    Cell::plain(if m.pinned { "yes" } else { "" })
}

fn unplaced_row(m: &CatalogEntry) -> Vec<Cell> {
    let state = if m.loadable_on.is_empty() {
        "not available".to_string()
    } else {
        format!("available on: {}", m.loadable_on.join(", "))
    };
    vec![
        Cell::plain(&m.id),
        Cell::plain("-"),
        Cell::plain(state),
        Cell::plain("-"),
        Cell::plain("-"),
        Cell::plain("-"),
        Cell::plain("-"),
        pinned(m),
    ]
}

fn placement_row(view: &FleetView, m: &CatalogEntry, p: &Placement, now_ms: u64) -> Vec<Cell> {
    let state = match p.state {
        ModelState::Ready => Cell::colored(p.state.as_str(), Color::Green),
        ModelState::Loading => Cell::colored(p.state.as_str(), Color::Yellow),
        ModelState::Poisoned => Cell::colored(p.state.as_str(), Color::Red),
    };
    let footprint = p.memory_bytes.saturating_add(p.kv_reserve_bytes);
    vec![
        Cell::plain(&m.id),
        Cell::plain(placement_node(
            view.nodes.iter().find(|n| n.name == p.node),
            p,
        )),
        state,
        Cell::plain(ByteSize(footprint).human()),
        Cell::plain(ago(now_ms, p.last_used_at)),
        Cell::plain(p.in_flight.to_string()),
        Cell::plain(cached(p)),
        pinned(m),
    ]
}

/// Conversations in the neuron's prefix cache and their tokens, e.g.
/// "3 / 4.2k tok"; "-" when none.
fn cached(p: &Placement) -> String {
    if p.cached_conversations == 0 {
        return "-".into();
    }
    let t = p.cached_tokens;
    let tokens = if t >= 1000 {
        format!("{:.1}k", t as f64 / 1000.0)
    } else {
        t.to_string()
    };
    format!("{} / {tokens} tok", p.cached_conversations)
}

/// The node name, plus the device when the node has more than one.
fn placement_node(node: Option<&NodeView>, p: &Placement) -> String {
    let device = node
        .filter(|n| n.devices.len() > 1)
        .and_then(|n| n.devices.iter().find(|d| d.index == p.device));
    match device {
        Some(d) => {
            let kind = match d.kind {
                DeviceKind::Cuda => "cuda",
                DeviceKind::Cpu => "cpu",
            };
            format!("{}/{kind}:{}", p.node, d.index)
        }
        None => p.node.clone(),
    }
}

/// "never", "just now", "12s ago", "3m ago", "5h ago", "2d ago".
fn ago(now_ms: u64, at_ms: u64) -> String {
    if at_ms == 0 {
        return "never".to_string();
    }
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0 => "just now".to_string(),
        1..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
#[path = "status_table_tests.rs"]
mod tests;
