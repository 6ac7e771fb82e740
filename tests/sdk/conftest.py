"""Start a real cortex (embedded mode: gateway + in-process neuron) for the
SDK conformance tests.

Environment:
  CORTEX_BIN         path to the cortex binary (default <repo>/target/debug/cortex)
  CORTEX_MODELS_DIR  models directory (default <repo>/models)
  CI                 when set, a missing model fails the run instead of skipping
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "smollm2-135m-instruct-q4_1"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTUP_TIMEOUT_S = 60.0

# Client timeout for requests whose prompt carries a tool list (~200 tokens):
# room for a slow, shared machine running a debug build.
SLOW_TIMEOUT_S = 600

# Deterministic prompt and answer used across the suite (greedy decoding).
PROMPT = "What is the capital of France? Answer in one sentence."
ANSWER = "The capital of France is Paris."


def _missing(msg: str):
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


class _Server:
    def __init__(self, proc: subprocess.Popen, log: deque):
        self.proc = proc
        self.log = log
        self.api: str | None = None
        self.listening = threading.Event()

    def tail(self, n: int = 40) -> str:
        return "\n".join(list(self.log)[-n:])


def _drain(server: _Server) -> None:
    """Read the process's log stream until EOF; note the API address."""
    assert server.proc.stdout is not None
    for raw in server.proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        server.log.append(line)
        if server.api is None:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("message") == "gateway listening":
                api = rec.get("api") or (rec.get("fields") or {}).get("api")
                if api:
                    server.api = str(api)
                    server.listening.set()
    server.listening.set()  # EOF: wake the waiter, which sees api is None


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, timeout: float = 5.0):
    with _NO_PROXY.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _bypass_proxies_for_loopback() -> None:
    """The SDKs' HTTP clients honour *_proxy variables; keep loopback direct."""
    for var in ("NO_PROXY", "no_proxy"):
        have = [h for h in os.environ.get(var, "").split(",") if h.strip()]
        for host in ("127.0.0.1", "localhost"):
            if host not in have:
                have.append(host)
        os.environ[var] = ",".join(have)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def cortex_url():
    """Base URL (``http://127.0.0.1:PORT``, no ``/v1``) of a running cortex."""
    binary = Path(os.environ.get("CORTEX_BIN") or REPO / "target" / "debug" / "cortex")
    models_dir = Path(os.environ.get("CORTEX_MODELS_DIR") or REPO / "models").resolve()
    if not (models_dir / MODEL_FILE).is_file():
        _missing(
            f"model {MODEL_FILE} not found in {models_dir}; "
            f"run scripts/fetch-model (or set CORTEX_MODELS_DIR)"
        )
    if not binary.is_file():
        pytest.fail(
            f"cortex binary not found at {binary}; run "
            f"`cargo build -p cortex-cli -p neuron` or set CORTEX_BIN",
            pytrace=False,
        )

    _bypass_proxies_for_loopback()
    tmp = tempfile.TemporaryDirectory(prefix="cortex-sdk-")
    cwd = tmp.name
    cmd = [
        str(binary.resolve()), "--log-format", "json", "serve",
        "--models-dir", str(models_dir),
        "--listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--neuron-listen", "127.0.0.1:0",
    ]
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    # Logs go to stderr; stdout is merged in so nothing is lost either way.
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    server = _Server(proc, deque(maxlen=500))
    threading.Thread(target=_drain, args=(server,), name="cortex-log", daemon=True).start()

    try:
        if not server.listening.wait(STARTUP_TIMEOUT_S) or server.api is None:
            try:  # log closed: the process is exiting; report its status
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            rc = proc.poll()
            why = f"exit code {rc}" if rc is not None else f"still silent after {STARTUP_TIMEOUT_S:.0f}s"
            pytest.fail(
                f"cortex did not log 'gateway listening' ({why}); log tail:\n{server.tail()}",
                pytrace=False,
            )
        url = f"http://{server.api}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cortex exited with {proc.returncode}; log tail:\n{server.tail()}",
                            pytrace=False)
            try:
                ids = [m.get("id") for m in _get_json(url + "/v1/models").get("data", [])]
                if MODEL_ID in ids:
                    break
                last = f"/v1/models lists {ids}"
            except Exception as e:  # noqa: BLE001 (still starting)
                last = repr(e)
            if time.monotonic() > deadline:
                pytest.fail(f"model {MODEL_ID} never became available ({last}); "
                            f"log tail:\n{server.tail()}", pytrace=False)
            time.sleep(0.2)
        yield url
    finally:
        _stop(proc)
        tmp.cleanup()


@pytest.fixture(scope="session")
def model_id() -> str:
    return MODEL_ID


EMBED_DIR = "all-MiniLM-L6-v2"
EMBED_ID = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def embed_model_id(cortex_url) -> str:
    """The embedding model's id, once the running cortex lists it."""
    models_dir = Path(os.environ.get("CORTEX_MODELS_DIR") or REPO / "models").resolve()
    if not (models_dir / EMBED_DIR / "model.safetensors").is_file():
        _missing(
            f"embedding model {EMBED_DIR}/ not found in {models_dir}; "
            f"run scripts/fetch-model --embed (or set CORTEX_MODELS_DIR)"
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        ids = [m.get("id") for m in _get_json(cortex_url + "/v1/models").get("data", [])]
        if EMBED_ID in ids:
            return EMBED_ID
        if time.monotonic() > deadline:
            pytest.fail(f"{EMBED_ID} never listed by /v1/models ({ids})", pytrace=False)
        time.sleep(0.2)
