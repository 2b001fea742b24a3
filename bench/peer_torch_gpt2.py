#!/usr/bin/env python3
"""PyTorch CPU eager peer: one GPT-2 training step (fwd + bwd + AdamW), fp32.

bench/run.sh's copy of ../shared/peers/torch_gpt2.py: the model, the step and the timing are
unchanged; added here are a peak-memory figure (VmHWM - VmRSS, VmHWM reset just before the model
is built), table lines for bench/run.sh ("LABEL gpt2_step_ms CONFIG THREADS V", "LABEL
gpt2_peak_mib CONFIG THREADS V"; --label, default torch) and --check [--against BIN]: the tiny
check model of bench_gpt2.c from the same deterministic initialisation, its loss, gradient sums
and loss after one AdamW step, compared with BIN --check's (bench_gpt2) when --against is given.

Same architecture as karpathy/llm.c train_gpt2.c: token + position embedding,
L pre-LN blocks (causal self-attention with fused qkv linear, plain softmax
attention, output projection; GELU(tanh) MLP of width 4C), final layernorm,
lm_head tied to wte, cross-entropy.  The embedding table has Vp rows (padded
vocab, rows >= V start at zero) so the parameter count equals llm.c's
(124,475,904 for the 124M shape); logits are over all Vp rows, targets < V.
AdamW: lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0 (as train_gpt2.c).

Usage:
  /usr/bin/python3 torch_gpt2.py --config 124m --threads 1
  /usr/bin/python3 torch_gpt2.py --config small --threads 2 [--foreach] [--tuned]
--threads N sets torch.set_num_threads(N) and also OPENBLAS_NUM_THREADS=N (see
_early_setup).  --tuned: OMP_WAIT_POLICY=PASSIVE plus glibc mallopt() so freed
activations are not handed back to the OS every step (both matter a lot here).
Prints per-step ms and the median over --steps steps after --warmup steps.
"""
import argparse
import math
import os
import statistics
import sys
import time


from peer_setup import early_setup  # noqa: E402 (before torch: see peer_setup.py)

early_setup("--tuned" in sys.argv)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CONFIGS = {
    "124m": dict(maxT=1024, V=50257, Vp=50304, L=12, NH=12, C=768),
    "small": dict(maxT=256, V=8192, Vp=8192, L=4, NH=4, C=256),
}
CHECK_CONFIG = dict(maxT=16, V=60, Vp=64, L=2, NH=2, C=16)  # with B 2, T 8: bench_gpt2.c's --check


class Block(nn.Module):
    def __init__(self, C, NH, maxT):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)
        mask = torch.tril(torch.ones(maxT, maxT, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, maxT, maxT), persistent=False)

    def attn(self, x):
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.attproj(y)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT2(nn.Module):
    def __init__(self, maxT, V, Vp, L, NH, C):
        super().__init__()
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList([Block(C, NH, maxT) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.apply(self._init)
        with torch.no_grad():
            self.wte.weight[V:].zero_()

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        x = self.lnf(x)
        logits = x @ self.wte.weight.t()  # tied lm_head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
    return -1


def check_init(model, V):
    """bench_gpt2.c's init_check: element k of parameter i is base + amp sin(0.7 k + 1.1 i + 0.3)
    (computed in double, rounded to f32); wte's padded rows 0."""
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            base, amp = 0.0, 0.1
            if "ln" in name and name.endswith("weight"):
                base = 1.0
            elif name.endswith("bias"):
                amp = 0.02
            k = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((base + amp * torch.sin(0.7 * k + 1.1 * i + 0.3)).float().view_as(p))
        model.wte.weight[V:].zero_()


def check_tokens(B, T, V):
    seq = torch.tensor([[(b * 31 + t * 17 + 5) % V for t in range(T + 1)] for b in range(B)])
    return seq[:, :-1], seq[:, 1:]


def run_check(against):
    """The "check KEY VALUES" lines of bench_gpt2 --check, from PyTorch; with against, runs
    `against --check` and prints the largest relative differences."""
    import subprocess
    torch.manual_seed(0)
    model = GPT2(**CHECK_CONFIG)
    check_init(model, CHECK_CONFIG["V"])
    x, y = check_tokens(2, 8, CHECK_CONFIG["V"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ref = {}
    loss = model(x, y)
    loss.backward()
    ref["loss0"] = [loss.item()]
    w = None
    for name, p in model.named_parameters():
        g = p.grad.double().flatten()
        w = torch.sin(torch.arange(g.numel(), dtype=torch.float64))
        ref["grad " + name] = [g.sum().item(), g.abs().sum().item(), (g * w).sum().item()]
    opt.step()
    opt.zero_grad(set_to_none=True)
    ref["loss1"] = [model(x, y).item()]
    for k, v in ref.items():
        print("check " + k + " " + " ".join(f"{e:.9e}" for e in v))
    if not against:
        return 0
    out = subprocess.run([against, "--check"], capture_output=True, text=True, check=True).stdout
    got = {}
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "check":
            n = 3 if f[1] == "grad" else 2
            got[" ".join(f[1:n])] = [float(e) for e in f[n:]]
    missing = sorted(set(ref) - set(got))
    if missing:
        print(f"# check: {against} printed no {', '.join(missing)}")
        return 1
    rel = lambda a, b, scale: abs(a - b) / scale if scale > 0 else abs(a - b)
    loss_rel = max(rel(got[k][0], ref[k][0], abs(ref[k][0])) for k in ("loss0", "loss1"))
    # per gradient: the sum of |g| relative to itself; the plain and the sin-weighted sums relative
    # to the sum of |g| (they may cancel to near 0)
    worst = (0.0, "")
    for k in ref:
        if not k.startswith("grad "):
            continue
        a = ref[k][1]
        for j, what in ((0, "sum"), (1, "sum |g|"), (2, "sin-weighted sum")):
            r = rel(got[k][j], ref[k][j], a)
            if r > worst[0]:
                worst = (r, f"{k[5:]} {what}")
    print(f"# check: loss {ref['loss0'][0]:.7f} (PyTorch) {got['loss0'][0]:.7f} (nabla), after one AdamW step "
          f"{ref['loss1'][0]:.7f} {got['loss1'][0]:.7f}")
    print(f"check_result loss_max_rel {loss_rel:.3g} grad_max_rel {worst[0]:.3g} (at {worst[1]}) "
          f"over {sum(k.startswith('grad ') for k in ref)} gradients")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=sorted(CONFIGS))
    p.add_argument("--label", default="torch", help="first word of the table lines")
    p.add_argument("--check", action="store_true", help="the check model's loss and gradient sums")
    p.add_argument("--against", help="with --check: a bench_gpt2 to compare with")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--foreach", action="store_true", help="AdamW(foreach=True)")
    p.add_argument("--tuned", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE and mallopt() so glibc keeps freed memory")
    a = p.parse_args()
    if a.check:
        sys.exit(run_check(a.against))
    if a.config is None:
        p.error("--config is required")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = proc_status_kib("VmRSS")
    except OSError:
        base = -1
    cfg = CONFIGS[a.config]
    model = GPT2(**cfg)
    nparams = sum(t.numel() for t in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, foreach=True if a.foreach else None)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg["V"], (a.warmup + a.steps, a.B, a.T + 1), generator=g)
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} config={a.config} "
          f"{cfg} params={nparams} B={a.B} T={a.T} foreach={a.foreach} tuned={a.tuned} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)

    times, cpu = [], []
    for step in range(a.warmup + a.steps):
        buf = data[step]
        x, y = buf[:, :-1], buf[:, 1:]
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        opt.step()
        dt = (time.perf_counter() - t0) * 1000
        dc = (time.process_time() - c0) * 1000
        print(f"step {step}: loss {loss.item():.4f} ({dt:.1f} ms){' [warmup]' if step < a.warmup else ''}",
              flush=True)
        if step >= a.warmup:
            times.append(dt)
            cpu.append(dc)
    hwm = proc_status_kib("VmHWM")
    peak = (hwm - base) / 1024 if base >= 0 and hwm >= 0 else -1
    print(f"{a.label} gpt2_step_ms {a.config} {a.threads} {statistics.median(times):.3f}")
    if peak >= 0:
        print(f"{a.label} gpt2_peak_mib {a.config} {a.threads} {peak:.1f}")
    print(f"RESULT config={a.config} threads={a.threads} foreach={a.foreach} tuned={a.tuned} "
          f"median_ms={statistics.median(times):.1f} min_ms={min(times):.1f} max_ms={max(times):.1f} "
          f"cpu_per_wall={sum(cpu) / sum(times):.2f} peak_mib={peak:.1f}")


if __name__ == "__main__":
    main()
