//! Shared helpers of the end-to-end tests: the real `cortex` and `neuron`
//! binaries as child processes on `127.0.0.1:0`, their addresses read from
//! their JSON log lines, process guards that always kill and reap, bounded
//! waits; [`http`]: a blocking HTTP client and readers of the fleet's JSON
//! and metrics; [`fleet`]: neurons behind a gateway,
//! as the fleet and fault tests use them.
//!
//! `cargo test --workspace` builds the `neuron` binary; `cargo test -p
//! cortex-cli` does not, so [`neuron_bin`] runs `cargo build -p neuron --bin
//! neuron` once per test binary (a no-op when it is up to date).
//!
//! Every wait here is a hang guard, never a performance assertion.

#![allow(dead_code, clippy::unwrap_used)]

pub mod fleet;
mod http;

pub use http::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MODEL_ID: &str = "smollm2-135m-instruct-q4_1";
pub const FRANCE: &str = "What is the capital of France? Answer in one sentence.";

/// Upper bound for one wait (a start, a load, a state change).
pub const WAIT: Duration = Duration::from_secs(60);

/// Environment variables the binaries read; removed so the caller's shell
/// cannot change what a test runs.
const SCRUB: &[&str] = &[
    "CORTEX_CONFIG",
    "CORTEX_MODELS_DIR",
    "CORTEX_SHUTDOWN_GRACE",
    "CORTEX_LISTEN",
    "CORTEX_METRICS_LISTEN",
    "CORTEX_NEURON_LISTEN",
    "CORTEX_GATEWAY",
    "CORTEX_API_KEY",
    "CORTEX_LOG_FORMAT",
    "NEURON_CONFIG",
    "NEURON_NAME",
    "NEURON_LISTEN",
    "NEURON_MODELS_DIRS",
    "NEURON_MEMORY_BUDGET",
    "NEURON_ADMIN_TOKEN",
    "NEURON_THREADS",
    "NEURON_LOG_FORMAT",
    "NEURON_ENABLE_FAULT_INJECTION",
    "NO_COLOR",
    "COLUMNS",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The directory holding the default model, or `None` (after saying why)
/// when it is missing locally. In CI (`CI` set) a missing model fails.
pub fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var("CORTEX_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    if dir.join(MODEL_FILE).is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the default model {MODEL_FILE} is missing from {}; run scripts/fetch-model",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A scratch directory under the target dir, so that hard links to the
/// model (in the workspace) usually work.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("e2e-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// A models directory `dir` holding the default model under each of
/// `names` (`alpha` → `alpha.gguf`): hard links, or copies across devices.
pub fn model_links(source_dir: &Path, dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let src = source_dir.join(MODEL_FILE);
    for name in names {
        let dst = dir.join(format!("{name}.gguf"));
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

pub fn cortex_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cortex"))
}

/// The `neuron` binary next to `cortex`, built once per test binary.
pub fn neuron_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = cortex_bin().with_file_name(format!("neuron{}", std::env::consts::EXE_SUFFIX));
        // `cargo test --workspace` has just built it; building it again with
        // `-p neuron` would use other features and rebuild half the tree.
        if is_newer_than_sources(&bin) {
            return bin;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "neuron", "--bin", "neuron"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        // The profile `cortex` was built with: target/<profile dir>/cortex.
        match bin
            .parent()
            .and_then(Path::file_name)
            .and_then(|d| d.to_str())
        {
            Some("debug") | None => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        // Up to date it takes a second; a fresh build needs longer, and an
        // existing (maybe stale) binary is better than hanging on a lock.
        let limit = if bin.is_file() { 300 } else { 1200 };
        match run_bounded(cmd, Duration::from_secs(limit)) {
            Some(out) if out.status.success() => {}
            Some(out) => eprintln!(
                "warning: cargo build -p neuron failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            None => eprintln!("warning: cargo build -p neuron did not finish in {limit}s"),
        }
        assert!(bin.is_file(), "no neuron binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Is `bin` newer than every source file of the crates it is built from?
fn is_newer_than_sources(bin: &Path) -> bool {
    fn newest(dir: &Path, acc: &mut std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                newest(&p, acc);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *acc = (*acc).max(m);
            }
        }
    }
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut latest = std::time::SystemTime::UNIX_EPOCH;
    for dir in ["crates/neuron/src", "crates/cortex-core/src"] {
        newest(&root.join(dir), &mut latest);
    }
    for file in ["crates/neuron/Cargo.toml", "Cargo.toml", "Cargo.lock"] {
        if let Ok(m) = std::fs::metadata(root.join(file)).and_then(|m| m.modified()) {
            latest = latest.max(m);
        }
    }
    built > latest
}

/// Run `cmd` to completion with a bounded wait; `None` (after killing it)
/// when it ran too long.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.unwrap()),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
            None
        }
    }
}

/// Run the `cortex` command line (a client command) and return its output.
pub fn cortex_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(cortex_bin());
    cmd.args(args);
    scrub(&mut cmd);
    run_bounded(cmd, WAIT).unwrap_or_else(|| panic!("cortex {args:?} hung"))
}

/// `cortex_cli` that must succeed; returns its stdout.
pub fn cortex_ok(args: &[&str]) -> String {
    let out = cortex_cli(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cortex {args:?} failed ({:?}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn scrub(cmd: &mut Command) {
    for var in SCRUB {
        cmd.env_remove(var);
    }
}

/// A child process that is killed and reaped when dropped. Its stderr is
/// read by a thread (so the pipe never fills): every line is kept, and
/// JSON log lines are handed to [`Proc::wait_log`].
pub struct Proc {
    pub what: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    events: mpsc::Receiver<Value>,
}

impl Proc {
    pub fn spawn(what: &str, mut cmd: Command) -> Self {
        scrub(&mut cmd);
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&lines);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
                keep.lock().unwrap().push(line);
            }
        });
        Self {
            what: what.to_string(),
            child,
            lines,
            events,
        }
    }

    /// The next JSON log line whose `message` is `message`; `None` when the
    /// process closed stderr (exited) first or `limit` passed.
    pub fn wait_log(&self, message: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["message"] == message => return Some(v),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`KILL`, `TERM`, …) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig} {} ({}) failed", self.pid(), self.what);
    }

    /// SIGKILL, then reap.
    pub fn kill_hard(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit(WAIT).expect("a SIGKILLed process exits")
    }

    /// The exit status, once the process has exited within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.stderr_lines();
            let from = lines.len().saturating_sub(60);
            eprintln!("---- last stderr lines of {} ----", self.what);
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `neuron serve` child.
pub struct Neuron {
    pub name: String,
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    pub url: String,
    pub proc: Proc,
}

/// Start `neuron serve --name NAME --models-dir DIR [--memory-budget B]
/// --listen LISTEN`; `Err(stderr)` when it exits before listening (a busy
/// port). An empty `--config` keeps `/etc/cortex/neuron.toml` out of it.
pub fn try_spawn_neuron(
    name: &str,
    models: &Path,
    budget: Option<u64>,
    listen: &str,
) -> Result<Neuron, String> {
    let config = models.with_file_name(format!("neuron-{name}.toml"));
    std::fs::write(&config, "").unwrap();
    let mut cmd = Command::new(neuron_bin());
    cmd.args(["serve", "--name", name, "--listen", listen])
        .args(["--log-format", "json"])
        .arg("--config")
        .arg(&config)
        .arg("--models-dir")
        .arg(models);
    if let Some(b) = budget {
        cmd.args(["--memory-budget", &b.to_string()]);
    }
    let proc = Proc::spawn(&format!("neuron {name}"), cmd);
    match proc.wait_log("neuron listening", WAIT) {
        Some(v) => {
            let addr = v["addr"].as_str().unwrap().to_string();
            Ok(Neuron {
                name: name.to_string(),
                url: format!("http://{addr}"),
                addr,
                proc,
            })
        }
        None => Err(proc.stderr_lines().join("\n")),
    }
}

pub fn spawn_neuron(name: &str, models: &Path, budget: Option<u64>) -> Neuron {
    try_spawn_neuron(name, models, budget, "127.0.0.1:0")
        .unwrap_or_else(|e| panic!("neuron {name} did not start:\n{e}"))
}

/// Start a neuron on a given address, retrying for a few seconds while the
/// port is still held by its previous owner.
pub fn respawn_neuron(name: &str, models: &Path, budget: Option<u64>, addr: &str) -> Neuron {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_spawn_neuron(name, models, budget, addr) {
            Ok(n) => return n,
            Err(e) if e.contains("cannot listen") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("neuron {name} did not start again on {addr}:\n{e}"),
        }
    }
}

/// A `cortex serve` child and where it listens.
pub struct Gateway {
    /// `http://127.0.0.1:PORT` of the API.
    pub api: String,
    /// `http://127.0.0.1:PORT` of `/metrics`.
    pub metrics: String,
    pub proc: Proc,
}

/// Start `cortex --log-format json serve EXTRA… --listen 127.0.0.1:0
/// --metrics-listen 127.0.0.1:0` in `cwd` and wait for "gateway listening".
pub fn spawn_gateway(cwd: &Path, extra: &[&std::ffi::OsStr]) -> Gateway {
    let mut cmd = Command::new(cortex_bin());
    cmd.args(["--log-format", "json", "serve"])
        .args(extra)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .current_dir(cwd);
    let proc = Proc::spawn("cortex serve", cmd);
    let Some(v) = proc.wait_log("gateway listening", WAIT) else {
        panic!(
            "cortex serve did not start:\n{}",
            proc.stderr_lines().join("\n")
        );
    };
    Gateway {
        api: format!("http://{}", v["api"].as_str().unwrap()),
        metrics: format!("http://{}", v["metrics"].as_str().unwrap()),
        proc,
    }
}

/// A `cortex.toml` in `dir` for `neurons` (name, endpoint), with fast
/// polls and an evictor that may evict at once.
pub fn write_gateway_config(dir: &Path, neurons: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from(
        "[gateway]\n\
         poll_interval = \"200ms\"\n\
         down_after_failures = 2\n\
         poll_timeout = \"1s\"\n\
         \n\
         [eviction]\n\
         interval = \"200ms\"\n\
         min_residency = \"0\"\n",
    );
    for (name, endpoint) in neurons {
        text.push_str(&format!(
            "\n[[neurons]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\n"
        ));
    }
    let path = dir.join("cortex.toml");
    std::fs::write(&path, text).unwrap();
    path
}
