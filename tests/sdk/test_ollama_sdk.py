"""Conformance: the unmodified official `ollama` Python package against a real
cortex (Ollama's API on the gateway's port).

As elsewhere the model is tiny, so these check the protocol (shapes, NDJSON
streams, errors, what the client parses) with greedy decoding; the
keep_alive test unloads the model, so it runs last in this file.
"""

from __future__ import annotations

import json
import time
import urllib.request

import ollama
import pytest

from conftest import ANSWER, PROMPT, SLOW_TIMEOUT_S

OPTIONS = {"temperature": 0, "seed": 7, "num_predict": 10}
MSGS = [{"role": "user", "content": PROMPT}]
# SmolLM2's `llama.context_length`.
CONTEXT = 8192


@pytest.fixture(scope="module")
def client(cortex_url):
    return ollama.Client(host=cortex_url, timeout=60)


@pytest.fixture(scope="module")
def reference(client, model_id):
    """The non-stream greedy chat answer to PROMPT, computed once."""
    return client.chat(model=model_id, messages=MSGS, options=OPTIONS, stream=False)


def fleet(cortex_url) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(cortex_url + "/admin/fleet", timeout=5) as resp:
        return json.loads(resp.read())


def placements(cortex_url, model_id) -> list:
    m = next(m for m in fleet(cortex_url)["models"] if m["id"] == model_id)
    return m["placements"]


def test_list(client, model_id):
    models = {m.model: m for m in client.list().models}
    assert model_id in models, models
    m = models[model_id]
    assert m.size and m.size > 50_000_000
    assert len(m.digest) == 64
    assert m.modified_at is not None
    assert m.details.format == "gguf"
    assert m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"
    assert m.details.parameter_size == "135M"


def test_show(client, model_id):
    s = client.show(model_id)
    assert s.modelinfo["general.architecture"] == "llama"
    assert s.modelinfo["llama.context_length"] == CONTEXT
    assert "completion" in s.capabilities
    assert s.details.quantization_level == "Q4_1"
    # Ollama's default tag resolves to the same model.
    assert client.show(model_id + ":latest").modelinfo == s.modelinfo


def test_version(client):
    # The package has no version() call; its own HTTP client asks the route.
    v = client._client.get("/api/version")
    assert v.status_code == 200
    assert v.json()["version"].count(".") == 2


def test_chat_non_stream(reference, model_id):
    r = reference
    assert isinstance(r, ollama.ChatResponse)
    assert r.model == model_id
    assert r.done is True
    assert r.done_reason == "stop"
    assert r.message.role == "assistant"
    assert r.message.content == ANSWER
    assert r.prompt_eval_count and r.prompt_eval_count > 5
    assert r.eval_count and r.eval_count >= 7
    assert r.total_duration >= r.eval_duration > 0


def test_chat_stream_joined_equals_non_stream(client, reference, model_id):
    parts = list(client.chat(model=model_id, messages=MSGS, options=OPTIONS, stream=True))
    assert len(parts) > 2
    *fragments, last = parts
    assert all(not p.done for p in fragments)
    assert last.done is True and last.done_reason == "stop"
    text = "".join(p.message.content for p in parts)
    assert text == reference.message.content
    assert last.eval_count == reference.eval_count
    assert last.prompt_eval_count == reference.prompt_eval_count


def test_ps_lists_the_loaded_model(client, reference, model_id):
    running = {m.model: m for m in client.ps().models}
    assert model_id in running, running
    m = running[model_id]
    assert m.context_length == CONTEXT
    assert m.size and m.size > 50_000_000
    assert m.size_vram == 0  # the CPU
    assert m.expires_at is not None


def test_generate_stream_and_not(client, model_id):
    one = client.generate(model=model_id, prompt=PROMPT, options=OPTIONS, stream=False)
    assert isinstance(one, ollama.GenerateResponse)
    assert one.done is True and one.done_reason == "stop"
    assert one.response == ANSWER
    parts = list(client.generate(model=model_id, prompt=PROMPT, options=OPTIONS, stream=True))
    assert parts[-1].done is True
    assert "".join(p.response for p in parts) == one.response


def test_options_reach_the_model(client, model_id):
    r = client.chat(
        model=model_id,
        messages=MSGS,
        options={"temperature": 0, "num_predict": 3},
    )
    assert r.done_reason == "length"
    assert r.eval_count == 3
    r = client.chat(
        model=model_id,
        messages=MSGS,
        options={"temperature": 0, "num_predict": 10, "stop": ["Paris"]},
    )
    assert r.message.content == ANSWER.split("Paris")[0], r.message.content


def test_tools_are_accepted(cortex_url, model_id):
    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
          city: The city name.
        """
        return "sunny"

    slow = ollama.Client(host=cortex_url, timeout=SLOW_TIMEOUT_S)
    r = slow.chat(
        model=model_id,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[get_weather],
        options={"temperature": 0, "num_predict": 24},
    )
    assert r.done is True
    # A tiny model may answer in words or call the tool; either parses.
    for call in r.message.tool_calls or []:
        assert call.function.name == "get_weather"
        assert isinstance(call.function.arguments, dict)


def test_unknown_model_is_a_404_response_error(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=MSGS)
    assert e.value.status_code == 404
    assert "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.show("no-such-model")
    assert e.value.status_code == 404


def test_bad_input_is_a_400_response_error(client, model_id):
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=model_id, prompt="x", raw=True, stream=False)
    assert e.value.status_code == 400
    assert "raw" in e.value.error


def test_zz_keep_alive_zero_unloads(client, cortex_url, model_id):
    """Last: the model is unloaded after the request, and the next one loads it."""
    r = client.chat(
        model=model_id,
        messages=MSGS,
        options={"temperature": 0, "num_predict": 2},
        keep_alive=0,
    )
    assert r.done is True
    deadline = time.monotonic() + 30
    while placements(cortex_url, model_id):
        assert time.monotonic() < deadline, fleet(cortex_url)
        time.sleep(0.1)
    assert model_id not in [m.model for m in client.ps().models]
    # A bare request loads it again, as Ollama's "preload" does.
    r = client.generate(model=model_id, keep_alive="5m")
    assert r.done_reason == "load"
    assert [p["state"] for p in placements(cortex_url, model_id)] == ["ready"]
    # And a bare keep_alive=0 unloads it at once.
    r = client.generate(model=model_id, keep_alive=0)
    assert r.done_reason == "unload"
    assert placements(cortex_url, model_id) == []
