"""The soak: many requests through a real gateway to two real neurons, one of
them SIGKILLed in the middle and restarted (issue 18, item 7).

Every request must end in success or a clean error in its dialect; none may
hang past its deadline; a request a client would retry (429/5xx before the
answer began, waiting as `Retry-After` says, as the official SDKs do) must
succeed within its retries; RSS at the end must be within 10 % of after
warm-up (same models loaded); no model may be left poisoned; afterwards the
gateway must answer each model in both dialects, streamed and not. Prints the
figures, writes them as JSON, and exits 1 naming each check that failed.

Run through scripts/soak (it builds the binaries and the Python environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx  # the HTTP client the pinned SDKs ship with (tests/sdk/requirements.txt)

MODELS = {
    # id (from the file name) -> file
    "smollm2-135m-instruct-q4_1": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m-q4_k_m": "gemma-3-270m-q4_k_m.gguf",
}
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 12 plus 30?",
    "Say hello in Spanish.",
    "Give me one word that rhymes with cat.",
    "Describe a tree in one sentence.",
    "What day comes after Monday?",
]
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass
class Outcome:
    kind: str  # ok | ok_after_retry | clean_error | stream_error | failed
    detail: str = ""
    attempts: int = 1
    ttft: float | None = None
    status: int | None = None


@dataclass
class Fleet:
    gateway: str
    neurons: dict[str, Proc] = field(default_factory=dict)
    cortex: Proc | None = None


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.2)
    raise SystemExit(f"soak: timed out waiting for {what} ({last})")


def fleet_json(gw: str) -> dict:
    return httpx.get(f"{gw}/admin/fleet", timeout=60).json()


def nodes_up(gw: str, names: list[str]) -> bool:
    fleet = fleet_json(gw)
    up = {n["name"] for n in fleet.get("nodes", []) if n.get("up")}
    return all(n in up for n in names)


def place(gw: str, placement: dict[str, str]) -> None:
    """Unload everything, then load each model on its node."""
    for model in MODELS:
        httpx.post(f"{gw}/admin/models/{model}/unload", json={}, timeout=120)
    for model, node in placement.items():
        r = httpx.post(f"{gw}/admin/models/{model}/load", json={"node": node}, timeout=600)
        if r.status_code != 200:
            raise SystemExit(f"soak: loading {model} on {node}: {r.status_code} {r.text}")


def check_error_body(dialect: str, body: bytes) -> str | None:
    """None when `body` is an error in `dialect`'s envelope, else why not."""
    try:
        doc = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:200]!r}"
    if dialect == "openai":
        err = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(err, dict) or not isinstance(err.get("message"), str):
            return f"not an OpenAI error: {doc}"
    else:
        if not (isinstance(doc, dict) and doc.get("type") == "error" and isinstance(doc.get("error"), dict)):
            return f"not an Anthropic error: {doc}"
    return None


def body_for(model: str, dialect: str, stream: bool, prompt: str, max_tokens: int) -> dict:
    if dialect == "openai":
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        }
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }


def request_for(i: int, rng: random.Random) -> tuple[str, str, bool, dict]:
    model = list(MODELS)[0] if i % 10 < 7 else list(MODELS)[1]
    dialect = "openai" if i % 2 == 0 else "anthropic"
    stream = (i // 2) % 2 == 1
    prompt = rng.choice(PROMPTS)
    max_tokens = rng.randint(4, 24)
    return model, dialect, stream, body_for(model, dialect, stream, prompt, max_tokens)


async def one_attempt(client: httpx.AsyncClient, gw: str, dialect: str, stream: bool, body: dict, deadline: float):
    """Returns (outcome kind, detail, status, ttft, retry): `retry` is None
    when a client would not retry, else the wait the server asked for (0.0
    when it named none)."""
    url = f"{gw}/v1/chat/completions" if dialect == "openai" else f"{gw}/v1/messages"
    headers = {"anthropic-version": "2023-06-01"} if dialect == "anthropic" else {}
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            async with client.stream("POST", url, json=body, headers=headers) as resp:
                if resp.status_code != 200:
                    data = await resp.aread()
                    why = check_error_body(dialect, data)
                    if why:
                        return "failed", f"{resp.status_code}: {why}", resp.status_code, None, None
                    retry = retry_after(resp) if resp.status_code in RETRY_STATUSES else None
                    return "clean_error", f"{resp.status_code} {error_message(data)}", resp.status_code, None, retry
                if not stream:
                    data = await resp.aread()
                    return check_whole(dialect, data) + (200, None, None)
                return await check_stream(dialect, resp, started) + (None,)
    except TimeoutError:
        return "failed", f"hung past its {deadline}s deadline", None, None, None
    except httpx.HTTPError as e:
        # Connection trouble between the client and the gateway: the gateway
        # itself never goes down in this soak, so this is a failure.
        return "failed", f"transport: {e!r}", None, None, None


def retry_after(resp: httpx.Response) -> float:
    """The wait the server asks for, read as the official SDKs read it
    (`retry-after-ms`, else `retry-after` in seconds; only up to 60 s);
    0.0 when it names none."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            wait = float(resp.headers.get(name, "")) * scale
        except ValueError:
            continue
        if 0 < wait <= 60:
            return wait
    return 0.0


def error_message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["message"])[:160]
    except (ValueError, KeyError, TypeError):
        return ""


def check_whole(dialect: str, data: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(data)
    except ValueError:
        return "failed", f"200 with a body that is not JSON: {data[:200]!r}"
    if dialect == "openai":
        try:
            choice = doc["choices"][0]
            ok = isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
        except (KeyError, IndexError, TypeError):
            ok = False
    else:
        ok = doc.get("type") == "message" and isinstance(doc.get("content"), list) and doc.get("stop_reason") in (
            "end_turn",
            "max_tokens",
            "stop_sequence",
        )
    return ("ok", "") if ok else ("failed", f"malformed 200 answer: {str(doc)[:300]}")


async def check_stream(dialect: str, resp: httpx.Response, started: float):
    """(kind, detail, status, ttft)."""
    ttft = None
    finished = False
    event = None
    async for line in resp.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if dialect == "openai":
            if data == "[DONE]":
                return ("ok", "", 200, ttft) if finished else ("failed", "[DONE] without a finish_reason", 200, ttft)
            doc = json.loads(data)
            if "error" in doc:
                return "stream_error", str(doc["error"].get("message", ""))[:120], 200, ttft
            for choice in doc.get("choices", []):
                if choice.get("delta", {}).get("content") and ttft is None:
                    ttft = time.monotonic() - started
                if choice.get("finish_reason"):
                    finished = True
        else:
            doc = json.loads(data)
            kind = doc.get("type", event)
            if kind == "error":
                return "stream_error", str(doc.get("error", {}).get("message", ""))[:120], 200, ttft
            if kind == "content_block_delta" and ttft is None:
                ttft = time.monotonic() - started
            if kind == "message_delta" and doc.get("delta", {}).get("stop_reason"):
                finished = True
            if kind == "message_stop":
                return ("ok", "", 200, ttft) if finished else ("failed", "message_stop without stop_reason", 200, ttft)
    return "failed", "stream ended without its final event", 200, ttft


async def run_request(i: int, client, gw: str, rng: random.Random, args) -> Outcome:
    model, dialect, stream, body = request_for(i, rng)
    what = f"{model}, {dialect}, {'streamed' if stream else 'not streamed'}"
    for attempt in range(1, args.retries + 2):
        kind, detail, status, ttft, retry = await one_attempt(client, gw, dialect, stream, body, args.deadline)
        detail = f"{detail} ({what}, attempt {attempt})" if kind != "ok" else detail
        if kind == "ok":
            return Outcome("ok" if attempt == 1 else "ok_after_retry", detail, attempt, ttft, status)
        if retry is None or attempt > args.retries:
            if retry is not None:
                return Outcome("failed", f"still {detail} after {attempt} attempts", attempt, None, status)
            return Outcome(kind, detail, attempt, ttft, status)
        # As the SDKs: the server's Retry-After, else exponential backoff.
        await asyncio.sleep(retry or min(8.0, 0.5 * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


async def still_serving(gw: str, args) -> list[str]:
    """After the soak: each model answers in both dialects, streamed and not,
    at the first try (the gateway kept serving; nothing is left broken)."""
    problems = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.deadline), trust_env=False) as client:
        for model in MODELS:
            for dialect in ("openai", "anthropic"):
                for stream in (False, True):
                    body = body_for(model, dialect, stream, PROMPTS[0], 8)
                    kind, detail, status, _, _ = await one_attempt(client, gw, dialect, stream, body, args.deadline)
                    if kind != "ok":
                        how = "streamed" if stream else "not streamed"
                        problems.append(f"after the soak, {model} in {dialect} ({how}): {kind} {status} {detail}")
    return problems


async def load_phase(fleet: Fleet, args, n: int, kill_at: int | None, restart_at: int | None, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    sem = asyncio.Semaphore(args.concurrency)
    started_count = 0
    limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.deadline), limits=limits, trust_env=False) as client:

        async def one(i: int) -> Outcome:
            nonlocal started_count
            async with sem:
                started_count += 1
                if kill_at is not None and started_count == kill_at:
                    print(f"soak: request {i}: SIGKILL n1", flush=True)
                    fleet.neurons["n1"].kill()
                if restart_at is not None and started_count == restart_at:
                    print(f"soak: request {i}: restarting n1", flush=True)
                    fleet.neurons["n1"].start()
                return await run_request(i, client, fleet.gateway, rng, args)

        return await asyncio.gather(*(one(i) for i in range(n)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cortex", required=True)
    ap.add_argument("--neuron", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds one attempt may take")
    ap.add_argument("--retries", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="inference threads per neuron")
    ap.add_argument("--out", default="bench-results/soak.json")
    args = ap.parse_args()

    models_dir = Path(args.models_dir)
    for f in MODELS.values():
        if not (models_dir / f).is_file():
            raise SystemExit(f"soak: {models_dir / f} is missing (scripts/fetch-model, scripts/fetch-model --gemma3)")

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"soak: work dir {work}", flush=True)
    mdir = work / "models"
    mdir.mkdir()
    for f in MODELS.values():
        try:
            os.link(models_dir / f, mdir / f)
        except OSError:
            import shutil

            shutil.copy(models_dir / f, mdir / f)

    # Size each neuron's budget to hold one model but not both, so the two
    # models compete for memory (read the footprints from a probe neuron).
    probe_port = free_port()
    probe = Proc("probe", [args.neuron, "serve", "--name", "probe", "--listen", f"127.0.0.1:{probe_port}",
                           "--models-dir", str(mdir), "--threads", "1"], work / "probe.log")
    probe.start()
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{probe_port}/health", timeout=2).status_code == 200, 60, "probe neuron")
        # The first /status reads both files' headers (Gemma's holds a
        # 262k-token vocabulary): seconds on a loaded machine. A hang guard.
        avail = httpx.get(f"http://127.0.0.1:{probe_port}/status", timeout=120).json()["available"]
    finally:
        probe.stop()
    foot = sorted(a["estimated_bytes"] for a in avail if a["id"] in MODELS)
    if len(foot) != 2:
        raise SystemExit(f"soak: the probe neuron offers {avail}, expected both models")
    budget = foot[1] + foot[0] // 2
    print(f"soak: footprints {foot}, budget per neuron {budget} bytes (one model, not both)", flush=True)

    fleet = Fleet(gateway="")
    ports = {name: free_port() for name in ("n1", "n2")}
    for name, port in ports.items():
        fleet.neurons[name] = Proc(name, [args.neuron, "serve", "--name", name, "--listen", f"127.0.0.1:{port}",
                                          "--models-dir", str(mdir), "--memory-budget", str(budget),
                                          "--threads", str(args.threads)], work / f"{name}.log")
    api, metrics = free_port(), free_port()
    (work / "cortex.toml").write_text(
        f"""[gateway]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"
poll_interval = "500ms"
down_after_failures = 2

[eviction]
min_residency = "2s"

[limits]
# The gateway's own bounds, so that it answers within the client's hang
# guard (--deadline) whatever happens: a request waits for a load or a
# swap at most load_wait, gets its answer started within request_deadline
# (else a clean 503/504 in its dialect, which the client retries), and
# then its first token within first_byte_timeout (else an error event);
# request_deadline + first_byte_timeout stay under the guard.
load_wait = "{int(args.deadline * 0.4)}s"
request_deadline = "{int(args.deadline * 0.5)}s"
first_byte_timeout = "{int(args.deadline * 0.4)}s"

[[neurons]]
name = "n1"
endpoint = "http://127.0.0.1:{ports['n1']}"

[[neurons]]
name = "n2"
endpoint = "http://127.0.0.1:{ports['n2']}"
"""
    )
    fleet.gateway = f"http://127.0.0.1:{api}"
    fleet.cortex = Proc("cortex", [args.cortex, "serve", "--config", str(work / "cortex.toml")], work / "cortex.log")
    figures: dict = {"requests": args.requests, "concurrency": args.concurrency}
    try:
        for p in fleet.neurons.values():
            p.start()
        fleet.cortex.start()
        wait_until(lambda: nodes_up(fleet.gateway, ["n1", "n2"]), 120, "both neurons up in the gateway")

        # Warm-up: each model on each node once, then the reference placement.
        # Twice the concurrency each time, so that the gateway has held as
        # many connections at once as it will under the soak (RSS "after
        # warm-up" then includes them).
        warm = 2 * args.concurrency
        place(fleet.gateway, {list(MODELS)[0]: "n1", list(MODELS)[1]: "n2"})
        asyncio.run(load_phase(fleet, args, warm, None, None, seed=1))
        place(fleet.gateway, {list(MODELS)[0]: "n2", list(MODELS)[1]: "n1"})
        asyncio.run(load_phase(fleet, args, warm, None, None, seed=2))
        reference = {list(MODELS)[0]: "n1", list(MODELS)[1]: "n2"}
        place(fleet.gateway, reference)
        time.sleep(1)
        rss_before = {
            "cortex": rss_bytes(fleet.cortex.pid),
            "n1": rss_bytes(fleet.neurons["n1"].pid),
            "n2": rss_bytes(fleet.neurons["n2"].pid),
        }

        t0 = time.monotonic()
        outcomes = asyncio.run(
            load_phase(fleet, args, args.requests, kill_at=int(args.requests * 0.35),
                       restart_at=int(args.requests * 0.5), seed=3)
        )
        elapsed = time.monotonic() - t0

        wait_until(lambda: nodes_up(fleet.gateway, ["n1", "n2"]), 120, "n1 back in the gateway")
        fleet_end = fleet_json(fleet.gateway)
        poisoned = [
            f"{m.get('id')}@{p.get('node')}"
            for m in fleet_end.get("models", [])
            for p in m.get("placements", [])
            if p.get("state") == "poisoned"
        ]
        place(fleet.gateway, reference)
        time.sleep(1)
        rss_after = {
            "cortex": rss_bytes(fleet.cortex.pid),
            "n1": rss_bytes(fleet.neurons["n1"].pid),
            "n2": rss_bytes(fleet.neurons["n2"].pid),
        }
        serving_problems = asyncio.run(still_serving(fleet.gateway, args))
    finally:
        if fleet.cortex:
            fleet.cortex.stop()
        for p in fleet.neurons.values():
            p.stop()

    by_kind: dict[str, int] = {}
    for o in outcomes:
        by_kind[o.kind] = by_kind.get(o.kind, 0) + 1
    ttfts = [o.ttft for o in outcomes if o.ttft is not None]
    failures = [o for o in outcomes if o.kind == "failed"]
    figures.update(
        elapsed_s=round(elapsed, 1),
        outcomes=by_kind,
        retried=sum(1 for o in outcomes if o.attempts > 1),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        rss_after_warmup=rss_before,
        rss_end=rss_after,
        poisoned=poisoned,
        after_the_soak=serving_problems or "every model answers in both dialects, streamed and not",
        failures=[f"{o.status}: {o.detail}" for o in failures[:20]],
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2))

    print("\nsoak: figures")
    print(f"  requests {args.requests} at concurrency {args.concurrency} in {elapsed:.1f}s; n1 SIGKILLed at 35 %, restarted at 50 %")
    for k in ("ok", "ok_after_retry", "clean_error", "stream_error", "failed"):
        print(f"  {k:<16} {by_kind.get(k, 0)}")
    if ttfts:
        print(f"  TTFT p50 {statistics.median(ttfts):.3f}s  p99 {percentile(ttfts, 99):.3f}s  (streamed, {len(ttfts)})")
    problems = []
    for name in rss_before:
        a, b = rss_before[name], rss_after[name]
        change = (b - a) / a
        print(f"  RSS {name:<7} after warm-up {a / 2**20:7.1f} MiB, at the end {b / 2**20:7.1f} MiB ({change:+.1%})")
        # The SIGKILLed neuron is a new process: its figure is reported, and
        # the bound applies to the processes that lived through the soak.
        if name != "n1" and abs(change) > 0.10:
            problems.append(f"RSS of {name} moved {change:+.1%} (bound 10 %)")
    if failures:
        problems.append(f"{len(failures)} requests failed, e.g. {[f'{o.status}: {o.detail}' for o in failures[:5]]}")
    if poisoned:
        problems.append(f"models left poisoned: {poisoned}")
    problems.extend(serving_problems)
    if not serving_problems:
        print("  after the soak: every model answers in both dialects, streamed and not")
    if problems:
        for p in problems:
            print(f"soak: FAIL: {p}")
        print(f"soak: logs in {work}")
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
