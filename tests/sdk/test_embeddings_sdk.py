"""Conformance: the official `openai` SDK's `client.embeddings.create` (and the
`ollama` client's `embed`) against a
real cortex serving all-MiniLM-L6-v2 (scripts/fetch-model --embed).

Reference values: the first dimensions of the three sentences below, computed
once by a second implementation (plain numpy over the same safetensors, see
crates/neuron/src/engine/embed/testdata/reference.py and reference.json).
"""

from __future__ import annotations

import json
import math

import ollama
import openai
import pytest

from conftest import REPO

REFERENCE = json.loads(
    (REPO / "crates/neuron/src/engine/embed/testdata/reference.json").read_text()
)
TEXTS = [s["text"] for s in REFERENCE["sentences"]]


@pytest.fixture(scope="module")
def client(cortex_url):
    return openai.OpenAI(base_url=cortex_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _close(a, b, tol=1e-4):
    return all(abs(x - y) < tol for x, y in zip(a, b))


def test_single_input_float(client, embed_model_id):
    r = client.embeddings.create(model=embed_model_id, input=TEXTS[0], encoding_format="float")
    assert isinstance(r, openai.types.CreateEmbeddingResponse)
    assert r.object == "list" and r.model == embed_model_id
    assert len(r.data) == 1 and r.data[0].index == 0 and r.data[0].object == "embedding"
    v = r.data[0].embedding
    assert len(v) == 384
    assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4
    assert _close(v, REFERENCE["sentences"][0]["leading"])
    n = len(REFERENCE["sentences"][0]["ids"])
    assert r.usage.prompt_tokens == n and r.usage.total_tokens == n


def test_list_input_matches_reference_and_orders_similarity(client, embed_model_id):
    r = client.embeddings.create(model=embed_model_id, input=TEXTS, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    vs = [d.embedding for d in r.data]
    for v, ref in zip(vs, REFERENCE["sentences"]):
        assert _close(v, ref["leading"])
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731 (unit vectors)
    assert cos(vs[0], vs[1]) > cos(vs[0], vs[2]) + 0.3
    assert r.usage.prompt_tokens == sum(len(s["ids"]) for s in REFERENCE["sentences"])


def test_base64_equals_float(client, embed_model_id):
    floats = client.embeddings.create(model=embed_model_id, input=TEXTS, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    default = client.embeddings.create(model=embed_model_id, input=TEXTS)
    b64 = client.embeddings.create(model=embed_model_id, input=TEXTS, encoding_format="base64")
    for f, d in zip(floats.data, default.data):
        assert list(d.embedding) == pytest.approx(f.embedding, abs=1e-6)
    for f, b in zip(floats.data, b64.data):
        # Asked explicitly, the SDK hands the base64 text through.
        assert isinstance(b.embedding, str)


def test_dimensions_refused_unless_native(client, embed_model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=embed_model_id, input="x", dimensions=128)
    assert e.value.status_code == 400
    assert "dimensions" in e.value.message and "384" in e.value.message
    r = client.embeddings.create(model=embed_model_id, input="x", dimensions=384,
                                 encoding_format="float")
    assert len(r.data[0].embedding) == 384


def test_chat_model_and_chat_request_refused(client, embed_model_id, model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=model_id, input="x")
    assert "chat model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=embed_model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    assert "embedding model" in e.value.message


def test_too_long_and_token_ids_refused(client, embed_model_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=embed_model_id, input="word " * 600)
    assert "maximum context length is 512" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=embed_model_id, input=[[101, 102]])
    assert "token ids" in e.value.message


def test_openai_sdk_truncate_extension(client, embed_model_id):
    # `truncate` is cortex's extension, sent as the SDK sends any extra field.
    r = client.embeddings.create(
        model=embed_model_id, input=["word " * 600, "word " * 510], extra_body={"truncate": True}
    )
    assert r.usage.prompt_tokens == 1024
    assert _close(r.data[0].embedding, r.data[1].embedding, 1e-5)


def test_ollama_embed_with_the_ollama_sdk(cortex_url, embed_model_id):
    """Ollama's `/api/embed` with the official `ollama` client: the same
    vectors as the reference, `truncate` by default (as Ollama), a 400
    `ResponseError` with `truncate=False`; and the older `/api/embeddings`."""
    client = ollama.Client(host=cortex_url, timeout=120)
    r = client.embed(model=embed_model_id, input=TEXTS[0])
    assert isinstance(r, ollama.EmbedResponse)
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) == 384
    assert _close(r.embeddings[0], REFERENCE["sentences"][0]["leading"])
    assert r.prompt_eval_count == len(REFERENCE["sentences"][0]["ids"])

    # 600 words cut to 512 tokens are the ids of 510 words ([CLS] … [SEP]).
    r = client.embed(model=embed_model_id, input=["word " * 600, "word " * 510])
    assert r.prompt_eval_count == 1024
    assert _close(r.embeddings[0], r.embeddings[1], 1e-5)
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model=embed_model_id, input="word " * 600, truncate=False)
    assert e.value.status_code == 400
    assert "maximum context length is 512" in e.value.error

    # The older route, still called by many RAG tools: one prompt, one vector.
    r = client.embeddings(model=embed_model_id, prompt=TEXTS[0])
    assert isinstance(r, ollama.EmbeddingsResponse)
    assert _close(r.embedding, REFERENCE["sentences"][0]["leading"])
