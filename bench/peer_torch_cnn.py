#!/usr/bin/python3
"""PyTorch (CPU) peer of nabla's bench_cnn: the default CNN's training step and its convolutions
alone, printed as raw lines "who key [arg...] value"; lines starting with '#' are comments.

Usage: peer_torch_cnn.py [--step | --conv] [--threads T] [--steps S] [--warmup W] [--label NAME]
                         [--tune-blas]

  --step (default)  one training step of the network below on a batch of 128 random inputs
                    (torch.randn) with random labels, a new batch each step (made outside the
                    timing): zero_grad(set_to_none=True), forward, F.cross_entropy, backward,
                    torch.optim.Adam (lr 1e-3) step. Prints each step, "NAME cnn_step_ms T V" (the
                    median), "NAME cnn_peak_mib T V" (VmHWM - VmRSS, VmHWM reset just before the model
                    is built) and a RESULT line.
  --conv            F.conv2d forward and backward (input, weight and bias with requires_grad, a fixed
                    random output gradient) at each convolution's shape, N 128, 3x3, padding 1:
                    conv1 (1 -> 32, 28x28) and conv2 (32 -> 64, 14x14). Prints "NAME conv_ms LAYER T V".

  Conv2d(1, 32, 3, padding=1) BatchNorm2d(32) ReLU MaxPool2d(2)
  Conv2d(32, 64, 3, padding=1) BatchNorm2d(64) ReLU MaxPool2d(2)
  Flatten Linear(3136, 128) ReLU Dropout(0.25) Linear(128, 10)

--threads T   torch.set_num_threads(T) (default 1); --tune-blas also openblas_set_num_threads(T).
Defaults: --steps 20 --warmup 3. The environment (thread variables, OMP_WAIT_POLICY, malloc
settings) is the caller's: bench/run.sh runs it as peer_torch.py's "best" configuration.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_torch import print_setup, proc_status_kib, set_threads  # noqa: E402

BATCH = 128


def cpu_seconds():
    return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)


def make_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-5, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64, eps=1e-5, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))


def bench_step(a):
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = proc_status_kib("VmRSS")
    except (OSError, KeyError):
        base = -1
    torch.manual_seed(0)
    model = make_cnn()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for s in range(a.warmup + a.steps):
        x = torch.randn(BATCH, 1, 28, 28)
        y = torch.randint(0, 10, (BATCH,))
        if s == a.warmup:
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        lv = loss.item()
        dt = (time.perf_counter() - t0) * 1e3
        if s >= a.warmup:
            times.append(dt)
        print(f"step {s}: loss {lv:.4f} ({dt:.2f} ms){' [warmup]' if s < a.warmup else ''}")
    cpu_per_wall = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    hwm = proc_status_kib("VmHWM")
    peak = (hwm - base) / 1024 if base >= 0 else -1
    med = statistics.median(times)
    print(f"{a.label} cnn_step_ms {a.threads} {med:.3f}")
    if peak >= 0:
        print(f"{a.label} cnn_peak_mib {a.threads} {peak:.1f}")
    print(f"RESULT cnn_step threads={a.threads} median_ms={med:.2f} min_ms={min(times):.2f} "
          f"max_ms={max(times):.2f} peak_mib={peak:.1f} cpu_per_wall={cpu_per_wall:.2f}")


def bench_conv(a):
    for name, c, o, h in (("conv1", 1, 32, 28), ("conv2", 32, 64, 14)):
        torch.manual_seed(7)
        x = torch.randn(BATCH, c, h, h, requires_grad=True)
        w = torch.randn(o, c, 3, 3, requires_grad=True)
        b = torch.randn(o, requires_grad=True)
        gy = torch.randn(BATCH, o, h, h)
        times = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for s in range(a.warmup + a.steps):
            if s == a.warmup:
                cpu0, wall0 = cpu_seconds(), time.perf_counter()
            x.grad = w.grad = b.grad = None
            t0 = time.perf_counter()
            F.conv2d(x, w, b, padding=1).backward(gy)
            dt = (time.perf_counter() - t0) * 1e3
            if s >= a.warmup:
                times.append(dt)
        cpu_per_wall = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        med = statistics.median(times)
        print(f"{a.label} conv_ms {name} {a.threads} {med:.3f}")
        print(f"RESULT conv={name} shape=({BATCH},{c},{h},{h})->{o} threads={a.threads} median_ms={med:.3f} "
              f"min_ms={min(times):.3f} max_ms={max(times):.3f} cpu_per_wall={cpu_per_wall:.2f}")
        sys.stdout.flush()


def main(argv):
    p = argparse.ArgumentParser(description="PyTorch peer of nabla's bench_cnn.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--step", action="store_true")
    g.add_argument("--conv", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--label", default="torch")
    p.add_argument("--tune-blas", action="store_true")
    a = p.parse_args(argv[1:])
    a.quick = False
    set_threads(a.threads, a.tune_blas)
    print_setup("cnn conv" if a.conv else "cnn step", a)
    print(f"# {a.label} mkldnn available: {torch.backends.mkldnn.is_available()}")
    sys.stdout.flush()
    (bench_conv if a.conv else bench_step)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
