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
import os
import sys
import time

import anthropic

url, model, turns, gen, prompts_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
label = sys.argv[6] if len(sys.argv) > 6 else "cortex"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_agent_prompts import QUESTIONS, SYSTEM, billing  # noqa: E402


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
        extra_body={"temperature": 0},  # this SDK has no temperature argument
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
