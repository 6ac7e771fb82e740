"""Conformance: the unmodified official `openai` Python SDK against a real cortex.

The model is tiny (SmolLM2-135M), so these tests check protocol conformance
(shapes, events, errors, SDK parsing), not answer quality. Greedy decoding
(temperature=0) makes the output deterministic.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import ANSWER, PROMPT, SLOW_TIMEOUT_S

MAX = 10  # enough for ANSWER (7 tokens + end of turn)
# Every request costs a prefill on a debug build; tests that only check that a
# request is accepted and well formed generate as little as possible.
MSGS = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def client(cortex_url):
    return openai.OpenAI(base_url=cortex_url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(client, model_id):
    """The non-stream greedy completion of PROMPT, computed once."""
    return client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=MAX
    )


def test_models_list(client, model_id):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert model_id in ids
    m = next(m for m in page.data if m.id == model_id)
    assert m.object == "model"
    assert isinstance(m.created, int)
    assert isinstance(m.owned_by, str)


def test_chat_non_stream(reference, model_id):
    r = reference
    assert isinstance(r, openai.types.chat.ChatCompletion)
    assert isinstance(r.id, str) and r.id
    assert r.object == "chat.completion"
    assert isinstance(r.created, int) and r.created > 1_600_000_000
    assert r.model == model_id
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert "Paris" in c.message.content
    assert c.message.content == ANSWER
    assert not c.message.tool_calls
    assert c.finish_reason == "stop"
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_max_tokens_length(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=MSGS, temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.choices[0].message.content


def test_max_completion_tokens_length(client, model_id):
    r = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_completion_tokens=2
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 2


STOP_KW = dict(messages=MSGS, temperature=0, max_tokens=MAX, stop=["Paris"])


@pytest.fixture(scope="module")
def stopped(client, model_id):
    """The non-stream greedy completion of PROMPT with stop=["Paris"]."""
    return client.chat.completions.create(model=model_id, **STOP_KW)


def test_stop_sequence(stopped):
    r = stopped
    text = r.choices[0].message.content
    assert "Paris" not in text
    assert text.startswith("The capital of France is")
    assert r.choices[0].finish_reason == "stop"


def test_stop_string(client, model_id):
    r = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=MAX, stop="France"
    )
    assert "France" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_stream_stop_sequence_not_leaked(client, model_id, stopped):
    """A stop sequence is held back in streaming too: no delta carries it."""
    chunks, text = _collect(client.chat.completions.create(model=model_id, stream=True, **STOP_KW))
    assert text == stopped.choices[0].message.content
    assert "Paris" not in text
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]


def test_system_message(client, model_id):
    r = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "system", "content": "You are a helpful assistant."}] + MSGS,
        temperature=0, max_tokens=3,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert r.choices[0].message.content


def _collect(stream):
    chunks = list(stream)
    text = "".join(
        (ch.choices[0].delta.content or "") for ch in chunks if ch.choices
    )
    return chunks, text


def test_stream_matches_non_stream_with_usage(client, model_id, reference):
    stream = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=MAX,
        stream=True, stream_options={"include_usage": True},
    )
    chunks, text = _collect(stream)
    assert text == reference.choices[0].message.content
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1
    assert len({ch.created for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == reference.usage.prompt_tokens
    assert last.usage.completion_tokens == reference.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_stream_without_usage(client, model_id, reference):
    stream = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=4, stream=True
    )
    chunks, text = _collect(stream)
    assert text and reference.choices[0].message.content.startswith(text)
    assert all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)


def test_stream_length(client, model_id):
    stream = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=3, stream=True,
        stream_options={"include_usage": True},
    )
    chunks, _ = _collect(stream)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage.completion_tokens == 3


def test_raw_response_headers(client, model_id):
    raw = client.chat.completions.with_raw_response.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=1
    )
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    parsed = raw.parse()
    assert parsed.object == "chat.completion"


def test_raw_stream_content_type(client, model_id):
    with client.chat.completions.with_streaming_response.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=1, stream=True
    ) as raw:
        assert raw.status_code == 200
        assert raw.headers["content-type"].startswith("text/event-stream")
        body = "".join(raw.iter_text())
    assert body.rstrip().endswith("data: [DONE]")


def test_error_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="no-such-model", messages=MSGS, max_tokens=3)
    e = ei.value
    assert e.status_code == 404
    assert e.message
    assert isinstance(e.body, dict) and e.body.get("message")


def test_error_unknown_model_stream(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=MSGS, max_tokens=3, stream=True
        )


def test_error_max_tokens_zero(client, model_id):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=model_id, messages=MSGS, max_tokens=0)
    assert ei.value.status_code == 400
    assert ei.value.message


def test_error_temperature_out_of_range(client, model_id):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=model_id, messages=MSGS, max_tokens=3, temperature=3)
    assert ei.value.status_code == 400


def test_error_empty_messages(client, model_id):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=model_id, messages=[], max_tokens=3)
    assert ei.value.status_code == 400


def test_error_n_2_unsupported(client, model_id):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=model_id, messages=MSGS, max_tokens=3, n=2)
    assert ei.value.status_code == 400


def test_error_body_shape(client, model_id):
    raw = client.with_options(max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        raw.chat.completions.create(model=model_id, messages=MSGS, max_tokens=0)
    body = ei.value.response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert err["type"] == "invalid_request_error"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_tools_pass_through(client, model_id):
    r = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS, tool_choice="auto", parallel_tool_calls=False,
        temperature=0, max_tokens=2,
    )
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    if c.finish_reason == "tool_calls":
        assert c.message.tool_calls
    else:
        assert isinstance(c.message.content, str)


def test_tool_conversation_roles(client, model_id):
    """assistant tool_calls + role=tool message + developer role are accepted."""
    r = client.chat.completions.create(
        model=model_id,
        messages=[
            {"role": "developer", "content": "You are terse."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        ],
        tools=TOOLS, temperature=0, max_tokens=2,
    )
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_content_parts_and_unknown_fields(client, model_id, reference):
    r = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        temperature=0, max_tokens=4, seed=1, top_p=1, user="sdk-test",
        extra_body={"some_future_field": {"x": 1}},
    )
    text = r.choices[0].message.content
    assert text and reference.choices[0].message.content.startswith(text)
    assert r.usage.prompt_tokens == reference.usage.prompt_tokens


def test_async_stream(cortex_url, model_id, reference):
    async def run():
        async with openai.AsyncOpenAI(
            base_url=cortex_url + "/v1", api_key="unused", max_retries=0, timeout=60
        ) as ac:
            stream = await ac.chat.completions.create(
                model=model_id, messages=MSGS, temperature=0, max_tokens=4,
                stream=True, stream_options={"include_usage": True},
            )
            parts, usage = [], None
            async for ch in stream:
                if ch.choices:
                    parts.append(ch.choices[0].delta.content or "")
                if ch.usage:
                    usage = ch.usage
            return "".join(parts), usage

    text, usage = asyncio.run(run())
    assert text and reference.choices[0].message.content.startswith(text)
    assert usage is not None and usage.completion_tokens == 4


def test_concurrent_greedy_identical(client, model_id, reference):
    def one(_):
        r = client.chat.completions.create(
            model=model_id, messages=MSGS, temperature=0, max_tokens=MAX
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(one, range(4)))
    assert texts == [reference.choices[0].message.content] * 4


def test_stream_early_close_then_next_request(client, model_id, reference):
    """Closing a stream part-way (client disconnect) leaves the server healthy."""
    stream = client.chat.completions.create(
        model=model_id, messages=MSGS, temperature=0, max_tokens=MAX, stream=True
    )
    for i, _ in enumerate(stream):
        if i >= 2:
            break
    stream.close()
    r = client.chat.completions.create(model=model_id, messages=MSGS, temperature=0, max_tokens=4)
    text = r.choices[0].message.content
    assert text and reference.choices[0].message.content.startswith(text)


def test_error_too_many_stop_sequences(client, model_id):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=model_id, messages=MSGS, max_tokens=3, stop=["a", "b", "c", "d", "e"]
        )


def test_models_retrieve(client, model_id):
    m = client.models.retrieve(model_id)
    assert m.id == model_id
    assert m.object == "model"


# --- Tool calls: named tool_choice → call → tool result → answer ------------

WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def slow_client(client):
    return client.with_options(timeout=SLOW_TIMEOUT_S)


@pytest.fixture(scope="module")
def weather_call(slow_client, model_id):
    """A named tool_choice: the model must call get_weather (greedy)."""
    return slow_client.chat.completions.create(
        model=model_id, messages=WEATHER_Q, tools=TOOLS, tool_choice=NAMED,
        temperature=0, max_tokens=40,
    )


def test_named_tool_choice_gives_a_tool_call(weather_call):
    c = weather_call.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    assert len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    assert "Paris" in args["city"]


def test_named_tool_choice_streamed_equals_non_stream(slow_client, model_id, weather_call):
    stream = slow_client.chat.completions.create(
        model=model_id, messages=WEATHER_Q, tools=TOOLS, tool_choice=NAMED,
        temperature=0, max_tokens=40, stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        assert not d.content  # no text, not even empty text, before the call
        for tc in d.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                slot["id"] = tc.id
                assert tc.type == "function"
            if tc.function.name:
                slot["name"] += tc.function.name
            slot["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    want = weather_call.choices[0].message.tool_calls[0]
    assert calls[0]["id"]
    assert calls[0]["name"] == want.function.name
    assert calls[0]["arguments"] == want.function.arguments


def test_tool_result_round_trip_answers_with_text(slow_client, model_id, weather_call):
    call = weather_call.choices[0].message.tool_calls[0]
    msgs = WEATHER_Q + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    r = slow_client.chat.completions.create(
        model=model_id, messages=msgs, tools=TOOLS, temperature=0, max_tokens=40,
    )
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length")
    assert not c.message.tool_calls
    assert isinstance(c.message.content, str) and c.message.content.strip()
