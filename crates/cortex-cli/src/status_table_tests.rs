//! Tests of the parent module.

use super::*;

const NOW: u64 = 1_800_000_000_000;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn gpu(index: u32, used: u64) -> DeviceStatus {
    DeviceStatus {
        index,
        kind: DeviceKind::Cuda,
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_total_bytes: 80 * GIB,
        memory_free_bytes: 80 * GIB - used,
        memory_budget_bytes: 72 * GIB,
        memory_used_bytes: used,
    }
}

fn placement(node: &str, device: u32, state: ModelState, weights: u64) -> Placement {
    Placement {
        node: node.into(),
        state,
        device,
        memory_bytes: weights,
        kv_reserve_bytes: 64 * MIB,
        loaded_at: NOW - 3_600_000,
        last_used_at: 0,
        in_flight: 0,
        cached_conversations: 0,
        cached_tokens: 0,
    }
}

fn entry(id: &str, placements: Vec<Placement>, loadable_on: &[&str]) -> CatalogEntry {
    CatalogEntry {
        kind: Default::default(),
        id: id.into(),
        aliases: Vec::new(),
        pinned: false,
        priority: 0,
        configured: true,
        placements,
        loadable_on: loadable_on.iter().map(|s| s.to_string()).collect(),
        context_length: None,
    }
}

/// Two nodes (one down), models in every state.
fn fleet() -> FleetView {
    let mut smol = entry(
        "smollm2-135m",
        vec![placement("beast", 0, ModelState::Ready, 98 * MIB)],
        &["beast"],
    );
    smol.pinned = true;
    smol.placements[0].last_used_at = NOW - 12_000;
    smol.placements[0].in_flight = 3;

    let qwen = entry(
        "qwen2.5-7b-instruct",
        vec![placement(
            "beast",
            1,
            ModelState::Loading,
            4 * GIB + 400 * MIB,
        )],
        &["beast"],
    );

    let mut llama = entry(
        "llama-3.1-8b-instruct",
        vec![placement("beast", 0, ModelState::Poisoned, 5 * GIB)],
        &["beast"],
    );
    llama.placements[0].last_used_at = NOW - 185_000;

    let mut gemma = entry(
        "gemma-2-2b",
        vec![
            placement("beast", 1, ModelState::Ready, 1_700 * MIB),
            placement("tiny", 0, ModelState::Ready, 1_700 * MIB),
        ],
        &["beast"],
    );
    gemma.placements[0].last_used_at = NOW - 2 * 3_600_000 - 5_000;
    gemma.placements[0].in_flight = 12;
    gemma.placements[1].last_used_at = NOW - 3 * 86_400_000;

    let phi = entry("phi-3-mini", Vec::new(), &["beast", "tiny"]);
    let mut mistral = entry("mistral-7b", Vec::new(), &[]);
    mistral.pinned = true;

    FleetView {
        nodes: vec![
            NodeView {
                name: "beast".into(),
                endpoint: "http://beast.internal:13131".into(),
                up: true,
                consecutive_failures: 0,
                last_seen_ms_ago: Some(800),
                version: Some("0.1.0".into()),
                devices: vec![gpu(0, 5 * GIB + 226 * MIB), gpu(1, 6 * GIB + 228 * MIB)],
            },
            NodeView {
                name: "tiny".into(),
                endpoint: "http://10.0.0.7:13131".into(),
                up: false,
                consecutive_failures: 4,
                last_seen_ms_ago: Some(95_000),
                version: Some("0.1.0".into()),
                devices: vec![DeviceStatus {
                    index: 0,
                    kind: DeviceKind::Cpu,
                    name: "cpu".into(),
                    memory_total_bytes: 32 * GIB,
                    memory_free_bytes: 20 * GIB,
                    memory_budget_bytes: 16 * GIB,
                    memory_used_bytes: 1_764 * MIB,
                }],
            },
            NodeView {
                name: "ghost".into(),
                endpoint: "http://ghost:13131".into(),
                up: false,
                consecutive_failures: 30,
                last_seen_ms_ago: None,
                version: None,
                devices: Vec::new(),
            },
        ],
        models: vec![smol, qwen, llama, gemma, phi, mistral],
    }
}

fn opts(color: bool, width: usize) -> TableOptions {
    TableOptions {
        color,
        now_ms: NOW,
        width,
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn plain_snapshot() {
    insta::assert_snapshot!(render(&fleet(), &opts(false, 0)));
}

#[test]
fn colored_snapshot() {
    // ESC shown as ␛ so that the snapshot reads as text.
    let out = render(&fleet(), &opts(true, 0)).replace('\x1b', "␛");
    insta::assert_snapshot!(out);
}

#[test]
fn narrow_snapshot() {
    insta::assert_snapshot!(render(&fleet(), &opts(false, 80)));
}

#[test]
fn empty_fleet() {
    let view = FleetView {
        nodes: Vec::new(),
        models: Vec::new(),
    };
    assert_eq!(
        render(&view, &opts(false, 0)),
        "NODES\n(no neurons configured)\n\nMODELS\n(no models)\n"
    );
}

#[test]
fn plain_output_has_no_escape_bytes() {
    for width in [0, 60, 80, 200] {
        let out = render(&fleet(), &opts(false, width));
        assert!(!out.contains('\x1b'), "{out}");
    }
    let colored = render(&fleet(), &opts(true, 0));
    assert!(colored.contains("\x1b[32mUP\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[31mDOWN\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[33mloading\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[31mpoisoned\x1b[0m"), "{colored}");
    assert!(colored.contains("\x1b[32mready\x1b[0m"), "{colored}");
}

#[test]
fn colour_does_not_move_columns() {
    for width in [0, 80] {
        assert_eq!(
            strip_ansi(&render(&fleet(), &opts(true, width))),
            render(&fleet(), &opts(false, width))
        );
    }
}

/// Every cell starts where its header starts: the character before each
/// column is a space, and each header is found at the same offset.
#[test]
fn columns_are_aligned() {
    for width in [0, 80, 100, 120] {
        let out = render(&fleet(), &opts(false, width));
        for section in out.split("\n\n") {
            let lines: Vec<Vec<char>> = section
                .lines()
                .skip(1)
                .map(|l| l.chars().collect())
                .collect();
            let header = &lines[0];
            // A column starts after two spaces; headers such as
            // "LAST USED" hold one.
            let starts: Vec<usize> = (0..header.len())
                .filter(|&i| {
                    header[i] != ' '
                        && (i == 0 || (i >= 2 && header[i - 1] == ' ' && header[i - 2] == ' '))
                })
                .collect();
            assert!(starts.len() >= 6, "{section}");
            for row in &lines[1..] {
                for &s in &starts[1..] {
                    if s >= row.len() {
                        continue; // an empty last cell
                    }
                    assert_eq!(row[s - 1], ' ', "column at {s} in {row:?}");
                    assert_eq!(row[s - 2], ' ', "column at {s} in {row:?}");
                    assert_ne!(row[s], ' ', "empty cell at {s} in {row:?}");
                }
            }
            // 80 is best effort: model ids are not cut below 16.
            if width >= 100 {
                for l in section.lines() {
                    assert!(l.chars().count() <= width, "{l:?} wider than {width}");
                }
            }
        }
    }
}

#[test]
fn ages() {
    assert_eq!(ago(NOW, 0), "never");
    assert_eq!(ago(NOW, NOW + 5_000), "just now");
    assert_eq!(ago(NOW, NOW - 999), "just now");
    assert_eq!(ago(NOW, NOW - 12_000), "12s ago");
    assert_eq!(ago(NOW, NOW - 185_000), "3m ago");
    assert_eq!(ago(NOW, NOW - 7_205_000), "2h ago");
    assert_eq!(ago(NOW, NOW - 3 * 86_400_000), "3d ago");
}

#[test]
fn bars() {
    assert_eq!(bar(0, 0), format!("[{}]", ".".repeat(20)));
    assert_eq!(bar(1, 24 * GIB), format!("[#{}]", ".".repeat(19)));
    assert_eq!(
        bar(12 * GIB, 24 * GIB),
        format!("[{}{}]", "#".repeat(10), ".".repeat(10))
    );
    assert_eq!(bar(30 * GIB, 24 * GIB), format!("[{}]", "#".repeat(20)));
    assert_eq!(truncate("abcdef", 4), "abc…");
    assert_eq!(truncate("abc", 4), "abc");
    assert_eq!(cut_text("http://a.b:13131", 10, Cut::Url), "a.b:13131");
    assert_eq!(cut_text("http://abc.de:13131", 10, Cut::Url), "….de:13131");
}

#[test]
fn device_lists() {
    let cpu = DeviceStatus {
        kind: DeviceKind::Cpu,
        name: "AMD EPYC".into(),
        ..gpu(0, 0)
    };
    assert_eq!(devices(&[]), "-");
    assert_eq!(devices(std::slice::from_ref(&cpu)), "cpu");
    assert_eq!(devices(&[gpu(0, 0)]), "cuda:0 H100 80GB HBM3");
    assert_eq!(devices(&[gpu(0, 0), gpu(1, 0)]), "cuda:0,1 H100 80GB HBM3");
    let four: Vec<_> = (0..4).map(|i| gpu(i, 0)).collect();
    assert_eq!(devices(&four), "cuda:0-3 H100 80GB HBM3");
    let a6000 = DeviceStatus {
        name: "NVIDIA RTX A6000".into(),
        ..gpu(2, 0)
    };
    assert_eq!(
        devices(&[gpu(0, 0), gpu(1, 0), a6000]),
        "cuda:0,1 H100 80GB HBM3, cuda:2 RTX A6000"
    );
}

#[test]
fn cached_column() {
    let mut p = placement("a", 0, ModelState::Ready, 1);
    assert_eq!(cached(&p), "-");
    p.cached_conversations = 3;
    p.cached_tokens = 4_200;
    assert_eq!(cached(&p), "3 / 4.2k tok");
    p.cached_tokens = 48;
    assert_eq!(cached(&p), "3 / 48 tok");
}
