#!/usr/bin/env python3
"""PyTorch CPU eager peer of bench_generate.c: GPT-2 text generation with a key/value cache, fp32.

The model is bench_generate's (nabla/gpt.h): token + position embeddings, pre-LN blocks (fused qkv
linear, causal softmax attention, output projection, GELU(tanh) MLP of width 4C), a final layer norm,
the head tied to the token embedding (vocab 50257, not padded); random normal(0, 0.02) weights.

Generation keeps, per layer, the keys and values of every position seen so far, as Hugging Face's
past_key_values: the prompt runs once (prefill, causal attention over its own positions), then each
step runs the one new token, appends its key and value to the layer's cache (torch.cat) and attends
with its query over all cached positions. Sampling is nanoGPT's: the last position's logits divided by
the temperature (1), those below the 40th largest set to -inf, softmax, torch.multinomial from a seeded
generator. Everything runs under torch.inference_mode().

Each round times one whole generation (prefill and every decoding step, the sampler included); one
untimed warm-up generation runs first. Tokens per second counts the generated tokens.

Usage:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=T OMP_NUM_THREADS=T \
      /usr/bin/python3 bench/peer_torch_generate.py --threads T [--config 124m|small] [--tokens 200]
      [--prompt-len 16] [--rounds 3] [--greedy] [--matvec] [--label torch_best]
--matvec: the decoding steps' one-row products run as torch.addmv(bias, weight, x) and the head as
torch.mv(wte, x) instead of nn.Linear and x @ wte^T (a rewrite of the model's code for one-row inputs;
with Debian's torch, whose one-row nn.Linear and x @ wte^T go through OpenBLAS's sgemm, it is faster).
Always tuned as peer_torch_gpt2.py --tuned: OMP_WAIT_POLICY=PASSIVE (set before torch loads),
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = T unless set, torch.set_num_threads(T), and glibc mallopt()
so freed blocks stay in the heap.
Prints "LABEL gen_tokens_per_s CONFIG T V", "LABEL gen_ms_per_token CONFIG T V" (the median round)
and a RESULT line.
"""
import argparse
import math
import os
import statistics
import sys
import time


from peer_setup import early_setup  # noqa: E402 (before torch: see peer_setup.py)

early_setup(True)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CONFIGS = {
    "124m": dict(ctx=1024, V=50257, L=12, NH=12, C=768),
    "small": dict(ctx=256, V=8192, L=4, NH=4, C=256),
}


MATVEC = False  # --matvec: one-row products as torch.addmv / torch.mv


def lin(m, x):
    """m(x) for an nn.Linear m; with --matvec, a single row runs as torch.addmv(bias, weight, row)."""
    if MATVEC and x.numel() == x.size(-1):
        return torch.addmv(m.bias, m.weight, x.reshape(-1)).view(*x.shape[:-1], -1)
    return m(x)


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def attn(self, x, past):
        """x (B, T, C) at the positions after those in past ((k, v), each (B, NH, Tp, hs), or None).
        Returns the output and the new (k, v) with the T positions appended."""
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = lin(self.qkv, x).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, NH, T, Tp + T)
        if T > 1:  # the new positions see the past and themselves up to their own position
            Tk = k.size(2)
            mask = torch.ones(T, Tk, dtype=torch.bool).tril(diagonal=Tk - T)
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return lin(self.attproj, y), (k, v)

    def forward(self, x, past):
        a, present = self.attn(self.ln1(x), past)
        x = x + a
        x = x + lin(self.fcproj, F.gelu(lin(self.fc, self.ln2(x)), approximate="tanh"))
        return x, present


class GPT2(nn.Module):
    def __init__(self, ctx, V, L, NH, C):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(ctx, C)
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, past, pos):
        """The last position's logits (B, V) of idx (B, T) at positions pos .. pos + T - 1, and the
        new per-layer caches."""
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))
        present = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, past[i] if past is not None else None)
            present.append(kv)
        x = self.lnf(x[:, -1, :])
        if MATVEC and x.size(0) == 1:
            return torch.mv(self.wte.weight, x[0]).view(1, -1), present
        return x @ self.wte.weight.t(), present


def generate(model, prompt, count, temperature, top_k, gen):
    """count tokens after prompt (1, P), as nanoGPT's sampling loop with a KV cache."""
    out = []
    past, pos, idx = None, 0, prompt
    for _ in range(count):
        logits, past = model(idx, past, pos)
        pos += idx.size(1)
        if temperature == 0:
            nxt = torch.argmax(logits, dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=gen)
        out.append(nxt)
        idx = nxt
    return torch.cat(out, dim=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=sorted(CONFIGS), default="124m")
    p.add_argument("--label", default="torch", help="first word of the table lines")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--greedy", action="store_true", help="temperature 0 (argmax)")
    p.add_argument("--matvec", action="store_true",
                   help="one-row products as torch.addmv / torch.mv instead of nn.Linear and x @ wte^T")
    a = p.parse_args()
    global MATVEC
    MATVEC = a.matvec
    cfg = CONFIGS[a.config]
    if a.prompt_len + a.tokens > cfg["ctx"]:
        p.error("prompt-len + tokens exceed the config's ctx")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT2(**cfg).eval()
    prompt = torch.tensor([[(i * 7919 + 13) % cfg["V"] for i in range(a.prompt_len)]])  # bench_generate's
    temperature, top_k = (0.0, 0) if a.greedy else (1.0, 40)
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} config={a.config} {cfg} f32 "
          f"prompt={a.prompt_len} tokens={a.tokens} sampling={'greedy' if a.greedy else 'top_k=40,temperature=1'} "
          f"cache=kv matvec={a.matvec} OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
          flush=True)
    times, cpu = [], []
    with torch.inference_mode():
        gen = torch.Generator().manual_seed(42)
        generate(model, prompt, a.tokens, temperature, top_k, gen)  # warm-up
        for r in range(a.rounds):
            gen = torch.Generator().manual_seed(42)
            t0, c0 = time.perf_counter(), time.process_time()
            toks = generate(model, prompt, a.tokens, temperature, top_k, gen)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            assert toks.size(1) == a.tokens
            times.append(dt)
            cpu.append(dc)
            print(f"round {r}: {dt * 1e3:.1f} ms, {a.tokens / dt:.2f} tokens/s, first tokens "
                  f"{' '.join(str(int(t)) for t in toks[0, :3])}", flush=True)
    med = statistics.median(times)
    print(f"{a.label} gen_tokens_per_s {a.config} {a.threads} {a.tokens / med:.3f}")
    print(f"{a.label} gen_ms_per_token {a.config} {a.threads} {med * 1e3 / a.tokens:.3f}")
    print(f"RESULT config={a.config} threads={a.threads} tokens={a.tokens} prompt={a.prompt_len} "
          f"median_s={med:.3f} min_s={min(times):.3f} max_s={max(times):.3f} tokens_per_s={a.tokens / med:.2f} "
          f"cpu_per_wall={sum(cpu) / sum(times):.2f}")


if __name__ == "__main__":
    main()
