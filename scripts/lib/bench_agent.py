"""cortex's side of scripts/bench-agent: a Claude Code-like conversation
through `cortex serve` with the official `anthropic` SDK.

The system prompt is two text blocks, as Claude Code sends them: a billing
header whose hash changes every request, then ~1,500 tokens of instructions.
Each of TURNS turns re-sends the whole history plus a new user message and
streams a greedy answer of GEN tokens; the time to the first text delta is
the turn's TTFT. Prints one JSON line per turn, and writes the templated
prompt text of each turn (SmolLM2's ChatML, without the billing header,
which cortex drops) to PROMPTS for llama.cpp's side to replay.

usage: bench_agent.py URL MODEL TURNS GEN PROMPTS [LABEL]
"""
import json
import random
import sys
import time

import anthropic

url, model, turns, gen, prompts_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
label = sys.argv[6] if len(sys.argv) > 6 else "cortex"

RULES = [
    "read the file before you edit it", "keep changes small and focused", "run the tests after each change",
    "never commit secrets", "prefer the standard library", "explain what you changed and why",
    "ask before deleting files", "match the existing code style", "write tests for new behaviour",
    "keep functions short", "name things for what they mean", "handle every error explicitly",
]
SYSTEM = "You are a coding agent working in the user's repository.\n" + "".join(
    f"Rule {i + 1}: {RULES[i % len(RULES)]}, and say so in one sentence when it matters ({i}).\n"
    for i in range(75)
)
QUESTIONS = [
    "List three things to check before editing a file.",
    "Why keep changes small?",
    "What should a commit message say?",
    "How do you name a test?",
    "When do you ask the user first?",
    "What do you do when a test fails?",
]


def billing():
    v = "".join(random.choices("0123456789abcdef", k=3))
    h = "".join(random.choices("0123456789abcdef", k=5))
    return f"x-anthropic-billing-header: cc_version=2.1.37.{v}; cc_entrypoint=cli; cch={h};"


def chatml(history):
    out = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for m in history:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=600)
history, prompts = [], []
for turn in range(turns):
    history.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
    prompts.append(chatml(history))
    start = time.perf_counter()
    ttft = None
    text = ""
    with client.messages.stream(
        model=model,
        max_tokens=gen,
        temperature=0,
        system=[{"type": "text", "text": billing()}, {"type": "text", "text": SYSTEM}],
        messages=history,
    ) as stream:
        for piece in stream.text_stream:
            if ttft is None and piece:
                ttft = time.perf_counter() - start
            text += piece
        final = stream.get_final_message()
    u = final.usage
    print(json.dumps({
        "engine": label, "turn": turn + 1, "ttft_s": ttft,
        "input_tokens": u.input_tokens,
        "cache_read_input_tokens": getattr(u, "cache_read_input_tokens", None),
    }), flush=True)
    history.append({"role": "assistant", "content": text.strip()})

with open(prompts_path, "w") as f:
    json.dump(prompts, f)
