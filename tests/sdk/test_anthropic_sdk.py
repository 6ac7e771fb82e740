"""Conformance: the unmodified official `anthropic` Python SDK against a real cortex.

The model is tiny (SmolLM2-135M), so these tests check protocol conformance
(shapes, events, errors, SDK parsing), not answer quality. Greedy decoding
(extra_body=GREEDY) makes the output deterministic.
"""

from __future__ import annotations

import anthropic
import pytest

from conftest import ANSWER, PROMPT, SLOW_TIMEOUT_S


def total_in(u) -> int:
    """The whole prompt, as Anthropic splits it: computed + read from the
    cache + written to it (cortex's prefix cache makes repeats cache reads)."""
    return u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)

MAX = 10  # enough for ANSWER (7 tokens + end of turn)
SHORT = 4  # for comparisons that only need a prefix of the answer
# Every request costs a prefill on a debug build; tests that only check that a
# request is accepted and well formed generate as little as possible.
MSGS = [{"role": "user", "content": PROMPT}]
# anthropic>=2 no longer has `temperature`/`top_k`/`top_p` parameters on
# messages.create/stream, but the API (and cortex) still accept them; the SDK's
# own escape hatch, extra_body, sends them. Greedy keeps the output deterministic.
GREEDY = {"temperature": 0}

TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture(scope="module")
def client(cortex_url):
    return anthropic.Anthropic(base_url=cortex_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(client, model_id):
    """The non-stream greedy message for PROMPT, computed once."""
    return client.messages.create(model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX)


def _text(msg) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def _assert_message(m, model_id):
    assert isinstance(m, anthropic.types.Message)
    assert m.id.startswith("msg_")
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.model == model_id
    assert m.usage.input_tokens > 0
    assert m.usage.output_tokens >= 0
    assert m.stop_reason in ("end_turn", "max_tokens", "stop_sequence", "tool_use")


def test_messages_non_stream(reference, model_id):
    m = reference
    _assert_message(m, model_id)
    assert len(m.content) == 1
    assert m.content[0].type == "text"
    assert "Paris" in m.content[0].text
    assert m.content[0].text == ANSWER
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_max_tokens_stop_reason(client, model_id):
    m = client.messages.create(model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=5)
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 5
    assert m.stop_sequence is None


def test_stop_sequences(client, model_id):
    m = client.messages.create(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX, stop_sequences=["Paris"]
    )
    assert m.stop_reason == "stop_sequence"
    assert m.stop_sequence == "Paris"
    assert "Paris" not in _text(m)
    assert _text(m).startswith("The capital of France is")


SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def with_system(client, model_id):
    """The greedy message for PROMPT under system=SYSTEM (a string)."""
    return client.messages.create(
        model=model_id, system=SYSTEM, messages=MSGS, extra_body=GREEDY, max_tokens=SHORT
    )


def test_system_string(with_system, model_id):
    _assert_message(with_system, model_id)
    assert _text(with_system)


def test_system_text_blocks_equal_string(client, model_id, with_system):
    a = with_system
    b = client.messages.create(
        model=model_id, system=[{"type": "text", "text": SYSTEM}], messages=MSGS,
        extra_body=GREEDY, max_tokens=SHORT,
    )
    _assert_message(b, model_id)
    assert _text(a) == _text(b)
    assert total_in(a.usage) == total_in(b.usage)


def test_content_blocks_equal_string(client, model_id, reference):
    m = client.messages.create(
        model=model_id, messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        extra_body=GREEDY, max_tokens=SHORT,
    )
    assert _text(m) and _text(reference).startswith(_text(m))
    assert total_in(m.usage) == total_in(reference.usage)


def test_stream_helper(client, model_id, reference):
    with client.messages.stream(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == _text(reference)
    _assert_message(final, model_id)
    assert _text(final) == text
    assert final.stop_reason == "end_turn"
    assert total_in(final.usage) == total_in(reference.usage)
    assert final.usage.output_tokens == reference.usage.output_tokens


def test_stream_helper_stop_sequence(client, model_id):
    with client.messages.stream(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX, stop_sequences=["Paris"]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Paris" not in text
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == "Paris"


def test_stream_helper_max_tokens(client, model_id):
    with client.messages.stream(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=3
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 3


def test_raw_stream_event_order(client, model_id, reference):
    events = list(
        client.messages.create(
            model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX, stream=True
        )
    )
    types = [e.type for e in events if e.type != "ping"]
    assert types[0] == "message_start"
    assert types.count("message_start") == 1
    assert types[-1] == "message_stop"
    assert types.count("message_stop") == 1
    assert types[-2] == "message_delta"
    assert types.count("message_delta") == 1

    start = next(e for e in events if e.type == "message_start")
    assert start.message.id.startswith("msg_")
    assert start.message.content == []
    assert start.message.role == "assistant"
    assert start.message.usage.input_tokens > 0
    assert total_in(start.message.usage) == total_in(reference.usage)

    # Blocks: start, one or more deltas, stop; properly nested and indexed.
    body = [e for e in events if e.type.startswith("content_block_")]
    assert body, "no content blocks"
    open_idx = None
    seen = []
    for e in body:
        if e.type == "content_block_start":
            assert open_idx is None, "block started while another is open"
            open_idx = e.index
            seen.append(e.index)
            assert e.content_block.type == "text"
            assert e.content_block.text == ""
        elif e.type == "content_block_delta":
            assert e.index == open_idx
            assert e.delta.type == "text_delta"
        else:
            assert e.type == "content_block_stop"
            assert e.index == open_idx
            open_idx = None
    assert open_idx is None
    assert seen == list(range(len(seen)))
    text = "".join(e.delta.text for e in body if e.type == "content_block_delta")
    assert text == _text(reference)

    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn"
    assert delta.delta.stop_sequence is None
    assert delta.usage.output_tokens == reference.usage.output_tokens


def test_count_tokens_matches_create(client, model_id, reference):
    r = client.messages.count_tokens(model=model_id, messages=MSGS)
    assert isinstance(r, anthropic.types.MessageTokensCount)
    assert r.input_tokens > 0
    assert r.input_tokens == total_in(reference.usage)


def test_count_tokens_with_system(client, model_id, with_system):
    r = client.messages.count_tokens(model=model_id, system=SYSTEM, messages=MSGS)
    assert r.input_tokens == total_in(with_system.usage)


def test_count_tokens_with_tools(client, model_id):
    r = client.messages.count_tokens(model=model_id, messages=MSGS, tools=TOOLS)
    assert r.input_tokens > 0
    m = client.messages.create(
        model=model_id, messages=MSGS, tools=TOOLS, extra_body=GREEDY, max_tokens=1
    )
    assert r.input_tokens == total_in(m.usage)


def test_models_list(client, model_id):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert model_id in ids
    m = next(m for m in page.data if m.id == model_id)
    assert m.type == "model"


def test_error_unknown_model(client):
    with pytest.raises(anthropic.NotFoundError) as ei:
        client.messages.create(model="no-such-model", messages=MSGS, max_tokens=3)
    e = ei.value
    assert e.status_code == 404
    assert e.body["type"] == "error"
    assert e.body["error"]["type"] == "not_found_error"
    assert e.body["error"]["message"]


def test_error_unknown_model_stream(client):
    with pytest.raises(anthropic.NotFoundError):
        with client.messages.stream(model="no-such-model", messages=MSGS, max_tokens=3) as s:
            s.get_final_message()


def test_error_max_tokens_zero(client, model_id):
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.messages.create(model=model_id, messages=MSGS, max_tokens=1, extra_body={"max_tokens": 0})
    e = ei.value
    assert e.status_code == 400
    assert e.body["type"] == "error"
    assert e.body["error"]["type"] == "invalid_request_error"


def test_error_max_tokens_missing_raw(client, model_id):
    # The SDK refuses to send a request without max_tokens; go underneath it.
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.post(
            "/v1/messages", body={"model": model_id, "messages": MSGS},
            cast_to=anthropic.types.Message,
        )
    assert ei.value.body["error"]["type"] == "invalid_request_error"


def test_error_empty_messages(client, model_id):
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=model_id, messages=[], max_tokens=3)


def test_tool_use_round_trip_accepted(client, model_id):
    m = client.messages.create(
        model=model_id,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny, 21 C"},
                {"type": "text", "text": "Summarise the weather."},
            ]},
        ],
        extra_body=GREEDY, max_tokens=2,
    )
    _assert_message(m, model_id)
    assert m.content
    assert m.stop_reason in ("end_turn", "max_tokens", "tool_use")
    for b in m.content:
        assert b.type in ("text", "tool_use")


def test_tool_result_blocks_and_error_flag(client, model_id):
    m = client.messages.create(
        model=model_id,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": True,
                 "content": [{"type": "text", "text": "service unavailable"}]},
            ]},
        ],
        extra_body=GREEDY, max_tokens=2,
    )
    _assert_message(m, model_id)


def test_tools_stream_well_formed(client, model_id):
    with client.messages.stream(
        model=model_id, tools=TOOLS,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        extra_body=GREEDY, max_tokens=2,
    ) as stream:
        final = stream.get_final_message()
    _assert_message(final, model_id)


def test_beta_messages(client, model_id, reference):
    m = client.beta.messages.create(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=SHORT,
        betas=["some-future-beta-2099-01-01"],
    )
    assert m.id.startswith("msg_")
    assert m.stop_reason == "max_tokens"
    text = "".join(b.text for b in m.content if b.type == "text")
    assert text and _text(reference).startswith(text)


def test_beta_count_tokens(client, model_id, reference):
    r = client.beta.messages.count_tokens(model=model_id, messages=MSGS)
    assert r.input_tokens == total_in(reference.usage)


def test_unknown_beta_header_accepted(client, model_id):
    m = client.messages.create(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=3,
        extra_headers={"anthropic-beta": "some-future-beta-2099-01-01,another-one-2100-12-31"},
    )
    assert m.stop_reason == "max_tokens"


def test_unknown_fields_and_metadata_accepted(client, model_id, reference):
    m = client.messages.create(
        model=model_id, messages=MSGS, max_tokens=SHORT,
        metadata={"user_id": "sdk-test"},
        extra_body={"temperature": 0, "top_k": 1, "top_p": 1.0, "some_future_field": {"x": 1}},
    )
    assert _text(m) and _text(reference).startswith(_text(m))


def test_bearer_auth_header_accepted(cortex_url, model_id):
    c = anthropic.Anthropic(base_url=cortex_url, auth_token="unused", max_retries=0, timeout=60)
    m = c.messages.create(model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=3)
    assert m.stop_reason == "max_tokens"


def test_system_role_messages_fold_into_system(client, model_id, with_system):
    """Newer Claude Code sends role=system entries inside `messages`; they fold
    into the system prompt (CONFORMANCE.md, Translation)."""
    b = client.messages.create(
        model=model_id, messages=[{"role": "system", "content": SYSTEM}] + MSGS,
        extra_body=GREEDY, max_tokens=SHORT,
    )
    _assert_message(b, model_id)
    assert _text(b) == _text(with_system)
    assert total_in(b.usage) == total_in(with_system.usage)


def test_tool_choice_and_thinking_accepted(client, model_id):
    """Fields a tiny text model cannot honour are still accepted, not rejected."""
    m = client.messages.create(
        model=model_id, messages=MSGS, tools=TOOLS, tool_choice={"type": "any"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body=GREEDY, max_tokens=1100, stop_sequences=[",", "."],
    )
    _assert_message(m, model_id)


def test_stream_early_close_then_next_request(client, model_id, reference):
    """Closing a stream part-way (client disconnect) leaves the server healthy."""
    with client.messages.stream(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX
    ) as stream:
        for i, _ in enumerate(stream.text_stream):
            if i >= 1:
                break
    m = client.messages.create(model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=SHORT)
    assert _text(m) and _text(reference).startswith(_text(m))


def test_more_than_four_stop_sequences(client, model_id):
    stops = ["Paris", "zz1", "zz2", "zz3", "zz4", "zz5"]
    m = client.messages.create(
        model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=MAX, stop_sequences=stops
    )
    assert m.stop_reason == "stop_sequence"
    assert m.stop_sequence == "Paris"


def test_models_retrieve(client, model_id):
    m = client.models.retrieve(model_id)
    assert m.id == model_id
    assert m.type == "model"


def test_max_tokens_beyond_the_context_is_clamped(client, model_id, reference):
    # Claude Code asks for far more tokens than a small model's context
    # holds; cortex generates what fits instead of failing.
    m = client.messages.create(model=model_id, messages=MSGS, extra_body=GREEDY, max_tokens=32000)
    assert m.stop_reason == "end_turn"
    assert _text(m) == _text(reference)


def test_error_temperature_above_one(client, model_id):
    # Anthropic's range is 0..1 (OpenAI's is 0..2).
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model=model_id, messages=MSGS, max_tokens=1, extra_body={"temperature": 1.5}
        )
    assert e.value.status_code == 400
    assert "temperature" in str(e.value)


# --- Tool calls: tool_choice {"type": "tool"} → tool_use → tool_result → text

WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]
USE_WEATHER = {"type": "tool", "name": "get_weather"}


@pytest.fixture(scope="module")
def slow_client(client):
    return client.with_options(timeout=SLOW_TIMEOUT_S)


@pytest.fixture(scope="module")
def weather_use(slow_client, model_id):
    """A forced tool: the model must call get_weather (greedy)."""
    return slow_client.messages.create(
        model=model_id, messages=WEATHER_Q, tools=TOOLS, tool_choice=USE_WEATHER,
        extra_body=GREEDY, max_tokens=60,
    )


def test_forced_tool_gives_a_tool_use_block(weather_use, model_id):
    m = weather_use
    _assert_message(m, model_id)
    assert m.stop_reason == "tool_use"
    # No (empty) text block before the call.
    assert [b.type for b in m.content] == ["tool_use"]
    block = m.content[0]
    assert block.id
    assert block.name == "get_weather"
    assert isinstance(block.input, dict)
    assert "Paris" in block.input["city"]


def test_forced_tool_count_tokens_matches_usage(slow_client, model_id, weather_use):
    r = slow_client.messages.count_tokens(
        model=model_id, messages=WEATHER_Q, tools=TOOLS, tool_choice=USE_WEATHER,
    )
    assert r.input_tokens == total_in(weather_use.usage)


def test_forced_tool_streamed_as_input_json_deltas(slow_client, model_id, weather_use):
    with slow_client.messages.stream(
        model=model_id, messages=WEATHER_Q, tools=TOOLS, tool_choice=USE_WEATHER,
        extra_body=GREEDY, max_tokens=60,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [e.content_block.type for e in starts] == ["tool_use"]
    assert starts[0].index == 0
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert deltas and all(d.type == "input_json_delta" for d in deltas)
    assert final.stop_reason == "tool_use"
    want = weather_use.content[0]
    got = final.content[0]
    assert (got.type, got.name, got.input) == ("tool_use", want.name, want.input)


def test_tool_result_round_trip_answers_with_text(slow_client, model_id, weather_use):
    block = weather_use.content[0]
    msgs = WEATHER_Q + [
        {"role": "assistant", "content": weather_use.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": block.id, "content": "Sunny, 21 C"},
        ]},
    ]
    m = slow_client.messages.create(
        model=model_id, messages=msgs, tools=TOOLS, extra_body=GREEDY, max_tokens=40,
    )
    _assert_message(m, model_id)
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in m.content] == ["text"]
    assert _text(m).strip()
