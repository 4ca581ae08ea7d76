#!/usr/bin/python3
"""Captum 0.8 LayerDeepLift on the engine's own checkpoint and token ids, in PyTorch (Debian's python3-torch 1.13).

Reads model.safetensors with a small reader of its own (no safetensors package here), builds the same post-LayerNorm
BERT classifier as the engine (word + position + token-type-0 embeddings, LayerNorm, self-attention with the additive
mask (1 - mask) * finfo.min, erf GELU, [CLS] pooler with tanh, linear classifier), and explains the centered logit of
the predicted class (the engine's default output) against the engine's [PAD] reference ([CLS] and [SEP] kept, padding
after [SEP]), at the word-embedding output, in batches. Before timing, its centered logits must agree with the
engine's f(x) (from `fleet explain --json`) within 1e-4.

usage: captum_deeplift.py IDS_JSON ENGINE_JSONL [--batch 8] [--threads N]
prints one line: "captum s_per_text=<s> delta_max=<|delta|> logit_diff_max=<d> texts=<n>"
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

from captum.attr import LayerDeepLift
from captum.attr._core import deep_lift

# Captum 0.8 has no rule for nn.GELU: without this LayerDeepLift raises (see machine-facts.md).
deep_lift.SUPPORTED_NON_LINEAR[nn.GELU] = deep_lift.nonlinear

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """8-byte little-endian header length, a JSON header (name -> dtype, shape, data_offsets), then raw data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            sys.exit(f"{path}: tensor {name} has dtype {info['dtype']}, this reader knows {sorted(DTYPES)}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float32))
    return tensors


class Layer(nn.Module):
    def __init__(self, h, heads, inter, eps):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attention_out = nn.Linear(h, h)
        self.attention_norm = nn.LayerNorm(h, eps=eps)
        self.softmax = nn.Softmax(dim=-1)  # one module per use: Captum hooks modules
        self.intermediate = nn.Linear(h, inter)
        self.gelu = nn.GELU()
        self.output = nn.Linear(inter, h)
        self.output_norm = nn.LayerNorm(h, eps=eps)

    def forward(self, x, bias):
        b, length, h = x.shape
        d = h // self.heads

        def split(t):
            return t.view(b, length, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
        context = (self.softmax(scores) @ v).transpose(1, 2).reshape(b, length, h)
        mid = self.attention_norm(self.attention_out(context) + x)
        return self.output_norm(self.output(self.gelu(self.intermediate(mid))) + mid)


class Bert(nn.Module):
    """BertForSequenceClassification as the engine computes it; forward returns centered logits z - mean(z)."""

    def __init__(self, config, w):
        super().__init__()
        h, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        self.word_embeddings = nn.Embedding.from_pretrained(w[p + "embeddings.word_embeddings.weight"], freeze=True)
        self.position = w[p + "embeddings.position_embeddings.weight"]
        self.token_type = w[p + "embeddings.token_type_embeddings.weight"][0]
        self.embedding_norm = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(
            Layer(h, config["num_attention_heads"], config["intermediate_size"], eps) for _ in range(config["num_hidden_layers"]))
        self.pooler = nn.Linear(h, h)
        self.tanh = nn.Tanh()
        n = w["classifier.weight"].shape[0]
        self.classifier = nn.Linear(h, n)
        with torch.no_grad():
            self.embedding_norm.weight.copy_(w[p + "embeddings.LayerNorm.weight"])
            self.embedding_norm.bias.copy_(w[p + "embeddings.LayerNorm.bias"])
            for i, layer in enumerate(self.layers):
                q = f"{p}encoder.layer.{i}."
                for mod, key in [(layer.query, "attention.self.query"), (layer.key, "attention.self.key"), (layer.value, "attention.self.value"),
                                 (layer.attention_out, "attention.output.dense"), (layer.attention_norm, "attention.output.LayerNorm"),
                                 (layer.intermediate, "intermediate.dense"), (layer.output, "output.dense"), (layer.output_norm, "output.LayerNorm")]:
                    mod.weight.copy_(w[q + key + ".weight"])
                    mod.bias.copy_(w[q + key + ".bias"])
            self.pooler.weight.copy_(w[p + "pooler.dense.weight"])
            self.pooler.bias.copy_(w[p + "pooler.dense.bias"])
            self.classifier.weight.copy_(w["classifier.weight"])
            self.classifier.bias.copy_(w["classifier.bias"])

    def forward(self, ids, mask):
        length = ids.shape[1]
        x = self.word_embeddings(ids) + self.position[:length] + self.token_type
        x = self.embedding_norm(x)
        bias = (1 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        z = self.classifier(self.tanh(self.pooler(x[:, 0])))
        return z - z.mean(dim=1, keepdim=True)


def batches(ids, size, pad):
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        width = max(len(t) for t in chunk)
        x = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        ref = torch.full((len(chunk), width), pad, dtype=torch.long)
        for i, t in enumerate(chunk):
            x[i, :len(t)] = torch.tensor(t)
            mask[i, :len(t)] = 1
            ref[i, 0], ref[i, len(t) - 1] = t[0], t[-1]  # [CLS] ... [SEP], [PAD] between and after
        yield start, x, mask, ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ids_json")
    ap.add_argument("engine_jsonl")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    spec = json.load(open(a.ids_json))
    folder, pad, ids = spec["model"], spec["pad_id"], spec["ids"]
    config = json.load(open(f"{folder}/config.json"))
    model = Bert(config, read_safetensors(f"{folder}/model.safetensors")).eval()
    engine = [json.loads(line) for line in open(a.engine_jsonl) if line.strip()]
    if len(engine) != len(ids):
        sys.exit(f"{a.engine_jsonl}: {len(engine)} results for {len(ids)} texts")
    targets = [e["target"]["index"] for e in engine]

    # Same model: the centered logit of each text's target against the engine's f(x).
    diff = 0.0
    with torch.no_grad():
        for start, x, mask, _ in batches(ids, a.batch, pad):
            z = model(x, mask)
            for i in range(x.shape[0]):
                diff = max(diff, abs(z[i, targets[start + i]].item() - engine[start + i]["f_x"]))
    if diff > 1e-4:
        sys.exit(f"the PyTorch model is not the engine's: centered logits differ by {diff:.3g} (> 1e-4)")

    dl = LayerDeepLift(model, model.word_embeddings)

    def run(limit):
        worst = 0.0
        for start, x, mask, ref in batches(ids[:limit], a.batch, pad):
            target = torch.tensor(targets[start:start + x.shape[0]])
            _, delta = dl.attribute(x, baselines=ref, target=target, additional_forward_args=(mask,), return_convergence_delta=True)
            worst = max(worst, delta.abs().max().item())
        return worst

    run(a.batch)  # warm-up: one batch
    t0 = time.perf_counter()
    worst = run(len(ids))
    seconds = time.perf_counter() - t0
    print(f"captum s_per_text={seconds / len(ids):.4f} delta_max={worst:.3g} logit_diff_max={diff:.3g} texts={len(ids)} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")


if __name__ == "__main__":
    main()
