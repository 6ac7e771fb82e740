"""Continuous-batching figures of one neuron through its HTTP API.

Starts `neuron serve --threads T`, loads the model, then measures:
  * streams: S concurrent streamed chats (temperature 0, max_tokens GEN,
    prompts that ask for long answers): aggregate generation tok/s =
    completion tokens of all streams / (last content chunk - first one);
  * gap: one stream generates; after WARM tokens its inter-token gaps are
    recorded for ALONE tokens (median = the gap alone); then a request with a
    ~LONG-token prompt arrives, and the worst gap of the first stream from
    then until that request's first token is recorded.
Prints one JSON line per figure. Used by scripts/bench-neuron. PREFILL_CHUNK
(env) sets the neuron's `prefill_chunk`; the gap line carries it.

usage: bench_batching.py NEURON_BIN MODEL.gguf THREADS GEN "1 4 8" LONG
"""
import http.client, json, os, re, statistics, subprocess, sys, tempfile, threading, time

neuron_bin, model_path, threads, gen, streams, long_tokens = sys.argv[1:7]
threads, gen, long_tokens = int(threads), int(gen), int(long_tokens)
streams = [int(s) for s in streams.split()]

TOPICS = ["the sea", "the moon", "mountains", "rivers", "forests", "cities", "deserts", "islands",
          "bridges", "trains", "gardens", "libraries"]


def start():
    log = tempfile.NamedTemporaryFile(prefix="neuron-bench-", suffix=".log", delete=False)
    extra = []
    if os.environ.get("PREFILL_CHUNK"):
        # A neuron.toml with only the chunk size (flags give the rest).
        cfg = tempfile.NamedTemporaryFile("w", prefix="neuron-bench-", suffix=".toml", delete=False)
        cfg.write(f"prefill_chunk = {int(os.environ['PREFILL_CHUNK'])}\n")
        cfg.close()
        extra = ["--config", cfg.name]
    proc = subprocess.Popen(
        [neuron_bin, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", *extra,
         "--threads", str(threads), "--models-dir", os.path.dirname(os.path.abspath(model_path))],
        stdout=log, stderr=subprocess.STDOUT)
    for _ in range(400):
        text = open(log.name).read()
        m = re.search(r'"addr":"([^"]+)"', text)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            return proc, log.name, host, int(port)
        if proc.poll() is not None:
            sys.exit("neuron exited:\n" + text)
        time.sleep(0.05)
    sys.exit("neuron did not report its address")


proc, log_path, host, port = start()


def call(method, path, body=None):
    c = http.client.HTTPConnection(host, port, timeout=900)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data)


def stream(messages, max_tokens, on_token=None):
    """Streams one chat; returns (send time, content chunk times, usage)."""
    body = json.dumps({"model": model, "messages": messages, "stream": True,
                       "stream_options": {"include_usage": True},
                       "max_tokens": max_tokens, "temperature": 0})
    c = http.client.HTTPConnection(host, port, timeout=900)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        sys.exit(f"chat: {r.status} {r.read()[:300]!r}")
    times, usage = [], None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices", []):
            if (ch.get("delta") or {}).get("content"):
                now = time.perf_counter()
                times.append(now)
                if on_token:
                    on_token(now)
    return t0, times, usage


def essay(topic):
    return [{"role": "user", "content": f"Write a long, detailed essay about {topic}, with many examples."}]


try:
    status = call("GET", "/status")
    name = os.path.basename(model_path)
    model = next(a["id"] for a in status["available"] if a["source"].endswith(name))
    call("POST", "/models/load", {"model": model})
    stream(essay("warming up"), 4)

    for s in streams:
        results = [None] * s

        def run(i):
            results[i] = stream(essay(TOPICS[i % len(TOPICS)]), gen)

        ts = [threading.Thread(target=run, args=(i,)) for i in range(s)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        firsts = [r[1][0] for r in results if r[1]]
        lasts = [r[1][-1] for r in results if r[1]]
        tokens = sum((r[2] or {}).get("completion_tokens", 0) for r in results)
        print(json.dumps({"kind": "streams", "engine": "cortex", "threads": threads, "streams": s,
                          "completion_tokens": tokens,
                          "tok_s": tokens / (max(lasts) - min(firsts))}), flush=True)

    # The gap test.
    WARM, ALONE = 16, 48
    seen = []
    phase = {"long_sent": None, "long_first": None}
    ready = threading.Event()

    def on_token(now):
        seen.append(now)
        if len(seen) == WARM + ALONE:
            ready.set()

    first = threading.Thread(target=lambda: stream(essay("the history of clocks"), 600, on_token))
    first.start()
    ready.wait()
    filler = ("The river that runs through the old town was used for centuries to carry wool "
              "and grain to the coast. ")
    user = "Read these notes, then summarise them in one sentence. "
    while call("POST", "/tokenize", {"model": model, "messages": [{"role": "user", "content": user}]})["count"] < long_tokens:
        user += filler
    long_count = call("POST", "/tokenize", {"model": model, "messages": [{"role": "user", "content": user}]})["count"]
    t_sent, long_times, _ = stream([{"role": "user", "content": user}], 1)
    first.join()
    alone = [b - a for a, b in zip(seen[WARM:WARM + ALONE], seen[WARM + 1:WARM + ALONE])]
    t_first = long_times[0] if long_times else time.perf_counter()
    during = [b - a for a, b in zip(seen, seen[1:]) if b > t_sent and a < t_first]
    median = statistics.median(alone)
    worst = max(during) if during else float("nan")
    print(json.dumps({"kind": "gap", "engine": "cortex", "threads": threads,
                      "prefill_chunk": int(os.environ.get("PREFILL_CHUNK") or 0) or None,
                      "prefill_tokens": long_count, "prefill_s": t_first - t_sent,
                      "median_gap_ms": median * 1e3, "worst_gap_ms": worst * 1e3,
                      "ratio": worst / median, "gaps_during": len(during)}), flush=True)
finally:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.unlink(log_path)
