"""Conformance: the official `openai` SDK's Responses API (`client.responses`)
against a real cortex, as Codex CLI uses it. Greedy decoding makes the
streamed text comparable with the non-streamed one."""

from __future__ import annotations

import openai
import pytest

from conftest import ANSWER, PROMPT

MAX = 10


@pytest.fixture(scope="module")
def client(cortex_url):
    return openai.OpenAI(base_url=cortex_url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(client, model_id):
    return client.responses.create(model=model_id, input=PROMPT, temperature=0, max_output_tokens=MAX)


def test_create(reference, model_id):
    r = reference
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.model == model_id
    assert r.output_text == ANSWER
    msg = [o for o in r.output if o.type == "message"]
    assert len(msg) == 1 and msg[0].role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_stream_equals_create(client, reference, model_id):
    kinds = []
    text = ""
    final = None
    with client.responses.stream(model=model_id, input=PROMPT, temperature=0, max_output_tokens=MAX) as s:
        for ev in s:
            kinds.append(ev.type)
            if ev.type == "response.output_text.delta":
                text += ev.delta
        final = s.get_final_response()
    assert kinds[0] == "response.created"
    assert "response.output_item.added" in kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert text == reference.output_text
    assert final.output_text == reference.output_text


def test_previous_response_id_continues(client, reference, model_id):
    r = client.responses.create(
        model=model_id, input="Say it again.", previous_response_id=reference.id, temperature=0, max_output_tokens=4
    )
    assert r.previous_response_id == reference.id
    # The stored conversation was sent: the prompt is longer than the new
    # input alone.
    assert r.usage.input_tokens > reference.usage.input_tokens


def test_unknown_previous_response_is_404(client, model_id):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model_id, input="x", previous_response_id="resp_nope", max_output_tokens=2)
