#!/usr/bin/python3
"""PyTorch (CPU) peer of nabla's bench_core: one measurement per process, printed as
raw lines "who key [arg...] value"; lines starting with '#' are comments.

Usage: peer_torch.py WHAT [--threads T] [--label NAME] [--tune-blas] [--quick]

  mlp   median ms of one training step of an MLP 784-256-256-10 (ReLU), batch 128,
        f32, F.cross_entropy, torch.optim.SGD lr 0.01: zero_grad(set_to_none=True),
        forward, loss, backward, update. Prints "NAME mlp_step_ms T VALUE".
  tiny  a graph of 1,000 scalar f32 ops (mul, add, tanh cycling) on rank-0
        requires_grad leaves, forward and backward; median microseconds per op.
        Prints "NAME tiny_op_us VALUE".
  mem   peak memory of the MLP training loop: "5" is written to
        /proc/self/clear_refs (VmHWM := VmRSS) just before the model and data are
        built, VmRSS is read then (baseline), 50 training steps run, VmHWM is read;
        prints "NAME mlp_peak_mib VALUE" with VALUE = (VmHWM - baseline) in MiB.

--threads T   torch.set_num_threads(T) (default 1).
--tune-blas   also openblas_set_num_threads(T), through ctypes, when libtorch has an
              OpenBLAS mapped (torch built with BLAS_INFO=generic does not tell it).
--label NAME  first word of the result line (default "torch").

The environment (thread variables, OpenBLAS and malloc settings) is the caller's:
bench/run.sh starts one process per configuration.
"""
import argparse
import ctypes
import os
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SCALAR_OPS = 1000
MLP_DIMS = (784, 256, 256, 10)
MLP_BATCH = 128
MLP_LR = 0.01
MEM_STEPS = 50


def now():
    return time.perf_counter()


def mapped_libs(word):
    """Real paths of the files mapped into this process whose name contains word."""
    try:
        with open("/proc/self/maps") as f:
            paths = {l.split()[-1] for l in f if word in l.lower() and l.split()[-1].startswith("/")}
    except OSError:
        return []
    return sorted({os.path.realpath(p) for p in paths})


def set_threads(n, tune_blas):
    torch.set_num_threads(n)
    if not tune_blas:
        return
    for path in mapped_libs("openblas"):
        try:
            ctypes.CDLL(path).openblas_set_num_threads(ctypes.c_int(n))
        except (OSError, AttributeError):
            pass


def print_setup(what, args):
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset"
                    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                              "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GLIBC_TUNABLES"))
    cfg = ", ".join(f"{k}={v}" for k, v in re.findall(r"\b(BLAS_INFO|USE_MKLDNN|USE_OPENMP)=([^,\s]+)",
                                                        torch.__config__.show()))
    libs = mapped_libs("blas")
    core = ""
    for path in mapped_libs("openblas"):
        try:
            get_core = ctypes.CDLL(path).openblas_get_corename
            get_core.restype = ctypes.c_char_p
            core = f"; OpenBLAS core {get_core().decode()}"
            break
        except (OSError, AttributeError):
            pass
    print(f"# {args.label} {what}: torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
          f"{', openblas_set_num_threads too' if args.tune_blas else ''}{' (quick)' if args.quick else ''}")
    print(f"# {args.label} env: {env}")
    print(f"# {args.label} torch config: {cfg}; BLAS mapped: {', '.join(libs) if libs else '(none found)'}{core}")


def make_mlp():
    """The model, its optimizer and one fixed batch (random inputs, int64 targets)."""
    torch.manual_seed(0)
    layers = []
    for i in range(len(MLP_DIMS) - 1):
        layers.append(torch.nn.Linear(MLP_DIMS[i], MLP_DIMS[i + 1]))
        if i + 2 < len(MLP_DIMS):
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=MLP_LR)
    x = torch.randn(MLP_BATCH, MLP_DIMS[0], dtype=torch.float32)
    y = torch.randint(0, MLP_DIMS[-1], (MLP_BATCH,), dtype=torch.int64)
    return model, opt, x, y


def mlp_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def bench_mlp(args):
    steps, warmup = (30, 5) if args.quick else (200, 20)
    model, opt, x, y = make_mlp()
    times = []
    for s in range(-warmup, steps):
        t0 = now()
        loss = mlp_step(model, opt, x, y)
        t1 = now()
        if s == -warmup:
            first = loss.item()
        if s >= 0:
            times.append(t1 - t0)
    print(f"# {args.label} mlp: {steps} steps after {warmup} warm-up, median; "
          f"loss {first:.4f} -> {loss.item():.4f}")
    print(f"{args.label} mlp_step_ms {args.threads} {statistics.median(times) * 1e3:.4f}")


def bench_tiny(args):
    reps, warmup = (20, 2) if args.quick else (200, 20)
    x = torch.tensor(0.5, dtype=torch.float32, requires_grad=True)
    w = torch.tensor(0.9, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(0.1, dtype=torch.float32, requires_grad=True)
    tot = []
    for r in range(-warmup, reps):
        if x.grad is not None:
            x.grad.zero_()
            w.grad.zero_()
            b.grad.zero_()
        t0 = now()
        h = x
        for i in range(SCALAR_OPS):
            k = i % 3
            if k == 0:
                h = torch.mul(h, w)
            elif k == 1:
                h = torch.add(h, b)
            else:
                h = torch.tanh(h)
        h.backward()
        del h
        t1 = now()
        if r >= 0:
            tot.append((t1 - t0) * 1e6 / SCALAR_OPS)
    print(f"# {args.label} tiny: {SCALAR_OPS} ops (mul, add, tanh), forward + backward, {reps} reps, "
          f"median; dy/dw = {w.grad.item():.6g}")
    print(f"{args.label} tiny_op_us {statistics.median(tot):.4f}")


def proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise KeyError(field)


def bench_mem(args):
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        print(f"# {args.label} mem: cannot reset VmHWM ({e}); no figure")
        return
    base = proc_status_kib("VmRSS")
    model, opt, x, y = make_mlp()
    for _ in range(MEM_STEPS):
        mlp_step(model, opt, x, y)
    hwm = proc_status_kib("VmHWM")
    print(f"# {args.label} mem: baseline VmRSS {base / 1024:.1f} MiB, whole-process VmHWM "
          f"{hwm / 1024:.1f} MiB after {MEM_STEPS} steps")
    print(f"{args.label} mlp_peak_mib {(hwm - base) / 1024:.2f}")


def main(argv):
    p = argparse.ArgumentParser(description="PyTorch peer of nabla's bench_core (one figure per run).")
    p.add_argument("what", choices=("mlp", "tiny", "mem"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default="torch")
    p.add_argument("--tune-blas", action="store_true")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv[1:])
    set_threads(args.threads, args.tune_blas)
    print_setup(args.what, args)
    sys.stdout.flush()
    {"mlp": bench_mlp, "tiny": bench_tiny, "mem": bench_mem}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
