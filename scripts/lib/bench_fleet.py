"""Cache-aware routing on a real fleet: scripts/bench-agent's second part.

Starts NEURONS `neuron serve --threads THREADS` processes and one
`cortex serve --config` gateway in front of them, loads the default model on
every neuron, then runs CONVS Claude Code-like conversations at once with the
official `anthropic` SDK. Each conversation's system prompt is the shared
coding-agent rules (as bench_agent.py) followed by its own environment block
(project, files), after a billing header whose hash changes every request;
its first user message carries a file the agent read (its own ~600
tokens), and each of TURNS turns re-sends the whole history. Counts, from the answers'
usage, the prompt tokens served from a prefix cache, and from the gateway's
`cortex_requests_total{node}` the requests each node served.

Prints one JSON line: {"neurons", "affinity", "requests", "prompt_tokens",
"cached_tokens", "per_node": {node: requests}, "wall_s"}.

env: KV_RESERVE (each neuron's default_kv_reserve, 1GiB).

usage: bench_fleet.py CORTEX_BIN NEURON_BIN MODEL.gguf NEURONS THREADS CONVS TURNS GEN AFFINITY(true|false)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import anthropic

(cortex_bin, neuron_bin, model_path, neurons, threads, convs, turns, gen,
 affinity) = sys.argv[1:10]
neurons, threads, convs, turns, gen = int(neurons), int(threads), int(convs), int(turns), int(gen)
# Each neuron's KV pool: 8 conversations of ~3,000 tokens need ~24k positions
# (the default 384 MiB holds 8,736 of the default model's).
kv_reserve = os.environ.get("KV_RESERVE", "1GiB")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_agent_prompts import QUESTIONS, SYSTEM, billing  # noqa: E402

PROJECTS = ["billing-service", "mobile-app", "data-pipeline", "docs-site", "cli-tool", "game-engine",
            "ml-trainer", "web-shop", "chat-bot", "compiler", "scheduler", "image-store"]


def environment(i):
    project = PROJECTS[i % len(PROJECTS)]
    files = "".join(f"  src/{project}/module_{j}.rs ({40 + 7 * j} lines)\n" for j in range(24))
    return (f"<env>\nWorking directory: /home/dev/{project}\nIs a git repository: yes\n"
            f"Platform: linux\nProject {i}: {project}. Files:\n{files}</env>\n")


def opened_file(i):
    """The file an agent read in the conversation's first turn (a tool result
    in real traffic): what makes each conversation's prefix its own."""
    project = PROJECTS[i % len(PROJECTS)]
    body = "".join(
        f"fn step_{j}(state: &mut State) -> Result<(), Error> {{ state.{project.replace('-', '_')}_{j} += {j}; Ok(()) }}\n"
        for j in range(25))
    return f"Here is src/{project}/main.rs:\n```rust\n{body}```\n"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, proc, log, what):
    for _ in range(600):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"{what} exited:\n" + open(log).read()[-3000:])
        time.sleep(0.1)
    sys.exit(f"{what} did not come up")


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"{}")


work = tempfile.mkdtemp(prefix="bench-fleet-")
procs = []
try:
    models = os.path.join(work, "models")
    os.mkdir(models)
    # A hard link (or a copy): the neuron serves no file that resolves outside its models dirs.
    try:
        os.link(model_path, os.path.join(models, os.path.basename(model_path)))
    except OSError:
        shutil.copy(model_path, models)
    nodes = []
    for n in range(neurons):
        name, port = f"n{n}", free_port()
        log = os.path.join(work, f"{name}.log")
        ncfg = os.path.join(work, f"{name}.toml")
        with open(ncfg, "w") as f:
            f.write(f'default_kv_reserve = "{kv_reserve}"\n')
        p = subprocess.Popen([neuron_bin, "serve", "--config", ncfg, "--name", name,
                              "--listen", f"127.0.0.1:{port}",
                              "--models-dir", models, "--threads", str(threads)],
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/health", p, log, name)
        nodes.append((name, port))
    api, metrics = free_port(), free_port()
    cfg = os.path.join(work, "cortex.toml")
    with open(cfg, "w") as f:
        f.write(f'[gateway]\nlisten = "127.0.0.1:{api}"\nmetrics_listen = "127.0.0.1:{metrics}"\n'
                f'poll_interval = "500ms"\nstate_file = ""\n\n'
                f'[routing]\nprefix_affinity = {affinity}\n\n[eviction]\nidle_unload_after = "0"\n')
        for name, port in nodes:
            f.write(f'\n[[neurons]]\nname = "{name}"\nendpoint = "http://127.0.0.1:{port}"\n')
    glog = os.path.join(work, "gateway.log")
    g = subprocess.Popen([cortex_bin, "serve", "--config", cfg], stdout=open(glog, "w"),
                         stderr=subprocess.STDOUT)
    procs.append(g)
    wait_http(f"http://127.0.0.1:{api}/ready", g, glog, "gateway")
    base = f"http://127.0.0.1:{api}"
    for _ in range(150):
        data = json.load(urllib.request.urlopen(f"{base}/v1/models", timeout=5))["data"]
        if data:
            break
        time.sleep(0.2)
    else:
        sys.exit("the gateway lists no model:\n" + open(glog).read()[-3000:])
    model = data[0]["id"]
    for name, _ in nodes:
        post(f"{base}/admin/models/{model}/load", {"node": name})

    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=900)
    totals = {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0}
    lock = threading.Lock()
    errors = []

    def conversation(i):
        system = SYSTEM + environment(i)
        history = []
        try:
            for turn in range(turns):
                question = QUESTIONS[(turn + i) % len(QUESTIONS)]
                history.append({"role": "user",
                                "content": (opened_file(i) if turn == 0 else "") + question})
                msg = client.messages.create(
                    model=model, max_tokens=gen, extra_body={"temperature": 0},
                    system=[{"type": "text", "text": billing()}, {"type": "text", "text": system}],
                    messages=history)
                u = msg.usage
                cached = u.cache_read_input_tokens or 0
                with lock:
                    totals["requests"] += 1
                    totals["cached_tokens"] += cached
                    totals["prompt_tokens"] += u.input_tokens + cached
                text = "".join(b.text for b in msg.content if b.type == "text").strip()
                history.append({"role": "assistant", "content": text or "(no answer)"})
        except Exception as e:  # reported, and the run fails below
            errors.append(f"conversation {i}: {e!r}")

    start = time.perf_counter()
    ts = [threading.Thread(target=conversation, args=(i,)) for i in range(convs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        sys.exit("\n".join(errors))
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
    per_node = {}
    for line in text.splitlines():
        m = re.match(r'cortex_requests_total\{(.*)\} ([0-9.e+]+)$', line)
        if m and 'api="anthropic"' in m.group(1):
            node = re.search(r'node="([^"]*)"', m.group(1)).group(1)
            per_node[node] = per_node.get(node, 0) + float(m.group(2))
    print(json.dumps({"neurons": neurons, "affinity": affinity == "true", **totals,
                      "per_node": per_node, "wall_s": wall}), flush=True)
finally:
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
