"""Reference embeddings for all-MiniLM-L6-v2, computed with a second, independent
implementation: plain numpy over the same model.safetensors, with the Hugging Face
`tokenizers` Python package on the same tokenizer.json. It follows
transformers' BertModel (post-LayerNorm encoder, exact erf GELU, additive
attention mask) and sentence-transformers' Pooling(mean) + Normalize modules.

Run once (numpy, safetensors, tokenizers in a venv):
    python reference.py MODEL_DIR > reference.json
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "Quarterly revenue grew by twelve percent.",
]
LEADING = 8


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def main(model_dir):
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.no_truncation()
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    d = hidden // heads

    def lin(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:n]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            q = lin(x, f"{p}.attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
            k = lin(x, f"{p}.attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
            v = lin(x, f"{p}.attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
            a = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d)) @ v
            a = a.transpose(1, 0, 2).reshape(n, hidden)
            x = layer_norm(lin(a, f"{p}.attention.output.dense") + x,
                           w[f"{p}.attention.output.LayerNorm.weight"],
                           w[f"{p}.attention.output.LayerNorm.bias"], eps)
            h = gelu(lin(x, f"{p}.intermediate.dense"))
            x = layer_norm(lin(h, f"{p}.output.dense") + x,
                           w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps)
        e = x.mean(0)
        e = e / max(np.linalg.norm(e), 1e-12)
        out.append({"text": s, "ids": ids, "leading": [round(float(t), 7) for t in e[:LEADING]],
                    "sum": round(float(e.sum()), 7), "vector": e})
    cos = [[round(float(a["vector"] @ b["vector"]), 7) for b in out] for a in out]
    for o in out:
        del o["vector"]
    json.dump({"implementation": "numpy float64 (reference.py)", "sentences": out, "cosines": cos},
              sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
