#!/usr/bin/env python3
"""PyTorch CPU peer of `nabla train --model gpt --text FILE|DIR` (src/cli/gpt.c), f32.

The same training as nabla's program, step for step:
  text    a file, or a folder's regular files (not links, names not starting with '.') in byte
          order of their names, those holding a NUL byte skipped, concatenated; the last
          round(val_frac * n) bytes are the validation part.
  data    splitmix64 seeded with seed ^ 0x5851F42D4C957F2D; each step draws B window starts
          s = floor(uniform * (n - T)) from the training part; x = bytes[s:s+T], y = bytes[s+1:s+T+1].
  model   GPT-2 over 256 byte values: token + position embeddings, pre-LN blocks (eps 1e-5) with
          fused-qkv causal attention and a GELU-tanh MLP of width 4C, a final LN, the head tied to
          wte; weights and embeddings normal(0, 0.02), the two c_proj weights 0.02/sqrt(2 L),
          biases 0, LN weights 1. (Same distributions as nabla, not the same numbers.)
  optim   AdamW betas (0.9, 0.95), eps 1e-8, weight decay on the 2-D projection weights only;
          lr of step s (from 0): s < warmup: lr (s+1)/warmup, then a cosine to lr/10 at the last
          step (nb_lr_cosine); the gradients clipped to global norm --clip (0: none).
  eval    every --eval-every steps and at the last: a generator seeded with seed + 1, --eval-batches
          batches of B windows of the validation part, the mean of the batch losses.

Prints the validation loss at each evaluation and a RESULT line: val_loss, train_s (the steps
only, evaluation excluded), total_s (model built to the end), tokens_per_s (B T steps / train_s).

Run it as bench/text.sh does (OpenBLAS reads its thread count when it loads; see
peer_torch_gpt2.py for why --tuned matters):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/peer_torch_text.py \
      --text /usr/share/games/fortunes --threads 2 --tuned
"""
import argparse
import math
import os
import sys
import time

MASK64 = (1 << 64) - 1


from peer_setup import early_setup  # noqa: E402 (before torch: see peer_setup.py)

early_setup("--tuned" in sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)


def starts(rng, count, n, T):
    """count window starts in [0, n - T), as nb_text_batch draws them."""
    return np.array([int(rng.uniform() * float(n - T)) for _ in range(count)], dtype=np.int64)


def load_text(path):
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            return f.read()
    parts = []
    for name in sorted(os.fsencode(e) for e in os.listdir(path)):
        if name.startswith(b"."):
            continue
        full = os.path.join(os.fsencode(path), name)
        if os.path.islink(full) or not os.path.isfile(full):
            continue
        with open(full, "rb") as f:
            b = f.read()
        if b and b"\0" not in b:
            parts.append(b)
    return b"".join(parts)


class Block(nn.Module):
    def __init__(self, C, NH, ctx, sdpa):
        super().__init__()
        self.NH, self.sdpa = NH, sdpa
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        mask = torch.tril(torch.ones(ctx, ctx, dtype=torch.bool))
        self.register_buffer("mask", ~mask.view(1, 1, ctx, ctx), persistent=False)

    def attn(self, x):
        B, T, C = x.shape
        hs = C // self.NH
        qkv = self.c_attn(x).view(B, T, 3, self.NH, hs).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(self.mask[:, :, :T, :T], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, ctx, L, NH, C, sdpa):
        super().__init__()
        self.wte = nn.Embedding(256, C)
        self.wpe = nn.Embedding(ctx, C)
        self.h = nn.ModuleList([Block(C, NH, ctx, sdpa) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
                elif p.dim() == 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)
                else:
                    nn.init.ones_(p)  # LayerNorm weights

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe.weight[:T]
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(B * T, 256), targets.reshape(B * T))


def lr_cosine(base, step, warmup, total, min_lr):
    if step < warmup:
        return base * (step + 1) / warmup
    if step >= total or total <= warmup:
        return min_lr
    t = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t))


def main():
    p = argparse.ArgumentParser(description="PyTorch peer of nabla train --model gpt --text")
    p.add_argument("--text", required=True)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attention", choices=("auto", "math", "sdpa"), default="auto",
                   help="sdpa: F.scaled_dot_product_attention (torch >= 2.0); auto: sdpa when there is one")
    p.add_argument("--tuned", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE and mallopt() so glibc keeps freed memory")
    a = p.parse_args()
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    if a.attention == "sdpa" and not has_sdpa:
        p.error(f"torch {torch.__version__} has no F.scaled_dot_product_attention")
    sdpa = a.attention == "sdpa" or (a.attention == "auto" and has_sdpa)
    if a.dim % a.heads:
        p.error("--dim must be a multiple of --heads")

    torch.set_num_threads(a.threads)
    t_total = time.perf_counter()
    raw = load_text(a.text)
    n = len(raw)
    nv = int(math.floor(a.val_frac * n + 0.5))
    data = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).astype(np.int64))
    tr, va = data[: n - nv], data[n - nv:]
    B, T = a.batch, a.ctx
    if len(tr) < T + 1 or len(va) < T + 1:
        sys.exit(f"the text is too short: {len(tr)} and {len(va)} bytes for training and validation")
    seed = a.seed & MASK64
    train_starts = starts(SplitMix64(seed ^ 0x5851F42D4C957F2D), a.steps * B, len(tr), T).reshape(a.steps, B)
    val_starts = starts(SplitMix64((seed + 1) & MASK64), a.eval_batches * B, len(va), T).reshape(a.eval_batches, B)
    offs = np.arange(T + 1, dtype=np.int64)

    torch.manual_seed(a.seed)
    model = GPT(T, a.layers, a.heads, a.dim, sdpa)
    decay = [q for name, q in model.named_parameters() if q.dim() == 2 and not name.startswith(("wte.", "wpe."))]
    other = [q for name, q in model.named_parameters() if not (q.dim() == 2 and not name.startswith(("wte.", "wpe.")))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    nparams = sum(q.numel() for q in model.parameters())
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} attention={'sdpa' if sdpa else 'math'}: "
          f"GPT of {a.layers} layers, {a.heads} heads, width {a.dim}, context {T} ({nparams} parameters) "
          f"on {n} bytes of text ({nv} for validation)", flush=True)

    def windows(part, st):
        w = part[torch.from_numpy(st[:, None] + offs)]
        return w[:, :-1], w[:, 1:]

    def validation_loss():
        model.eval()
        with torch.no_grad():
            s = sum(model(*windows(va, val_starts[b])).item() for b in range(a.eval_batches))
        model.train()
        return s / a.eval_batches

    train_s, since, since_n, val = 0.0, 0.0, 0, float("nan")
    for s in range(a.steps):
        t0 = time.perf_counter()
        lr = lr_cosine(a.lr, s, a.warmup, a.steps, a.lr / 10) if a.schedule == "cosine" else \
            (a.lr * (s + 1) / a.warmup if s < a.warmup else a.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = model(*windows(tr, train_starts[s]))
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        l = loss.item()
        train_s += time.perf_counter() - t0
        if not math.isfinite(l):
            sys.exit(f"training diverged: the loss is {l} at step {s + 1}")
        since += l
        since_n += 1
        if (s + 1) % a.eval_every == 0 or s + 1 == a.steps:
            val = validation_loss()
            print(f"step {s + 1}/{a.steps}  train loss {since / since_n:.4f}  val loss {val:.4f}  "
                  f"{(s + 1) * B * T / train_s:.0f} tokens/s", flush=True)
            since, since_n = 0.0, 0
    total_s = time.perf_counter() - t_total
    print(f"RESULT val_loss={val:.4f} train_s={train_s:.2f} total_s={total_s:.2f} "
          f"tokens_per_s={a.steps * B * T / train_s:.0f} threads={a.threads} attention={'sdpa' if sdpa else 'math'}")


if __name__ == "__main__":
    main()
