#!/usr/bin/python3
"""PyTorch (CPU) peer of bench/bench_core.c: the same three measurements,
printed in the same line format with "torch" in place of "nabla".

  (a) per-op cost of a graph of 1,000 scalar ops (rank-0 f32, mul / add / tanh
      on requires_grad leaves), forward and backward, in microseconds;
  (b) f32 matmul GFLOP/s at 256, 512 and 1024 (square, contiguous), one
      thread, plus 1024 at two threads;
  (c) elementwise add out = a + b in GB/s (f32, 16M elements, 3 * 4 * n bytes).

Medians over repetitions; lines starting with '#' are comments.
Usage: peer_torch.py [--quick]
bench/run_core.sh runs it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""
import ctypes
import os
import re
import statistics
import sys
import time

import torch

SCALAR_OPS = 1000


def now():
    return time.perf_counter()  # CLOCK_MONOTONIC-based on Linux


def blas_note():
    """Which BLAS library libtorch resolves sgemm from, as far as we can tell."""
    lines = [f"{k}={v}" for k, v in re.findall(r"\b(BLAS_INFO|USE_MKLDNN|USE_OPENMP)=([^,\s]+)",
                                               torch.__config__.show())]
    return lines, mapped_libs("blas")


def mapped_libs(word):
    try:
        with open("/proc/self/maps") as f:
            paths = {l.split()[-1] for l in f if word in l.lower() and l.split()[-1].startswith("/")}
    except OSError:
        return []
    return sorted({os.path.realpath(p) for p in paths})


def set_threads(n):
    """torch.set_num_threads does not reach a BLAS that torch was not built
    against by name (BLAS_INFO=generic): tell OpenBLAS too when it is mapped."""
    torch.set_num_threads(n)
    for path in mapped_libs("openblas"):
        try:
            ctypes.CDLL(path).openblas_set_num_threads(ctypes.c_int(n))
        except (OSError, AttributeError):
            pass


def bench_scalar(reps, warmup):
    x = torch.tensor(0.5, dtype=torch.float32, requires_grad=True)
    w = torch.tensor(0.9, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(0.1, dtype=torch.float32, requires_grad=True)
    fwd, bwd, tot = [], [], []
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
        t1 = now()
        h.backward()
        del h
        t2 = now()
        if r >= 0:
            fwd.append((t1 - t0) * 1e6 / SCALAR_OPS)
            bwd.append((t2 - t1) * 1e6 / SCALAR_OPS)
            tot.append((t2 - t0) * 1e6 / SCALAR_OPS)
    print(f"# scalar graph: {SCALAR_OPS} ops (mul, add, tanh) on rank-0 f32 leaves, {reps} reps, median")
    print(f"# scalar check: dy/dw = {w.grad.item():.6g}")
    print(f"torch scalar_fwd_us {statistics.median(fwd):.4f}")
    print(f"torch scalar_bwd_us {statistics.median(bwd):.4f}")
    print(f"torch scalar_op_us {statistics.median(tot):.4f}")


def bench_matmul(n, min_reps, budget_s, label=""):
    g = torch.Generator().manual_seed(n)
    a = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    b = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    flop = 2.0 * n * n * n
    c = torch.matmul(a, b)  # warm-up
    ref = (a[:4].double() @ b.double()).float()
    err = (c[:4] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
    del c
    times, held = [], [None]
    start = now()
    while len(times) < 200 and (len(times) < min_reps or now() - start < budget_s):
        t0 = now()
        held[0] = torch.matmul(a, b)
        t1 = now()
        held[0] = None  # freed outside the timed region, as nb_scope_end in bench_core
        times.append(t1 - t0)
    print(f"# matmul {n}x{n} f32, {torch.get_num_threads()} thread(s): {len(times)} reps, median "
          f"(rel err of 4 rows {err:.2g})")
    print(f"torch matmul{label}_gflops {n} {flop / statistics.median(times) * 1e-9:.2f}")


def bench_add(n, reps):
    a = torch.full((n,), 1.0, dtype=torch.float32)
    b = torch.full((n,), 2.0, dtype=torch.float32)
    d = torch.zeros(n, dtype=torch.float32)
    nbytes = 3.0 * 4.0 * n
    t_out, t_inp = [], []
    for r in range(-2, reps):
        t0 = now()
        c = a + b
        t1 = now()
        if r == -2 and not (c[0].item() == 3.0 and c[-1].item() == 3.0):
            print("# WARNING: add result is wrong")
        del c
        if r >= 0:
            t_out.append(t1 - t0)
    for r in range(-2, reps):
        t0 = now()
        d.add_(b)
        t1 = now()
        if r >= 0:
            t_inp.append(t1 - t0)
    print(f"# add f32: n = {n}, bytes counted 3*4*n, {reps} reps, median, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"torch add_gbps {nbytes / statistics.median(t_out) * 1e-9:.2f}")
    print(f"torch add_inplace_gbps {nbytes / statistics.median(t_inp) * 1e-9:.2f}")


def main(argv):
    quick = "--quick" in argv[1:]
    unknown = [a for a in argv[1:] if a != "--quick"]
    if unknown:
        print(f"usage: {argv[0]} [--quick]", file=sys.stderr)
        return 2
    set_threads(1)
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset"
                    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    print(f"# torch {torch.__version__} CPU peer{' (quick)' if quick else ''}; {env}")
    print("# one thread (torch.set_num_threads, and openblas_set_num_threads when OpenBLAS is mapped) "
          "unless a line says otherwise")
    sys.stdout.flush()

    bench_scalar(20 if quick else 200, 2 if quick else 20)
    sys.stdout.flush()
    for n in (256, 512, 1024):
        bench_matmul(n, 2 if quick else 5, 0.2 if quick else 1.5)
        sys.stdout.flush()
    if (os.cpu_count() or 1) >= 2:
        set_threads(2)
        bench_matmul(1024, 2 if quick else 5, 0.2 if quick else 1.5, label="_2threads")
        set_threads(1)
        sys.stdout.flush()
    bench_add((1 << 20) if quick else (1 << 24), 5 if quick else 30)

    cfg, libs = blas_note()
    print(f"# torch config: {', '.join(cfg)}")
    print(f"# BLAS libraries mapped: {', '.join(libs) if libs else '(none found)'}")
    if libs and not any("openblas" in p or "blis" in p or "atlas" in p or "mkl" in p for p in libs):
        print("# NOTE: torch's matmul runs on the reference (netlib) BLAS here, not an optimised one; "
              "see NABLA_PEER_BLAS_DIR in bench/run_core.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
