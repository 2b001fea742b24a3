#!/usr/bin/python3
"""PyTorch (CPU) peer of nabla's bench_attention: causal attention at B 1, 12 heads, T 1024, d 64
through the math path of F.scaled_dot_product_attention (torch 1.13 has none: softmax(q k^T scale +
causal mask) v written out), forward and forward+backward with autograd, median milliseconds, and the
peak memory of the process (VmHWM, after resetting it with /proc/self/clear_refs when allowed).

Usage: peer_torch_attention.py [--threads T] [--dtype f32|f64] [--T n]

Figures only.
"""
import argparse
import statistics
import time

import torch


def vm(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--dtype', default='f32')
    ap.add_argument('--T', type=int, default=1024)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dt = torch.float32 if a.dtype == 'f32' else torch.float64
    T, H, d = a.T, 12, 64
    g = torch.Generator().manual_seed(0)
    q, k, v, w = (torch.rand(1, H, T, d, generator=g, dtype=dt) * 2 - 1 for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    keep = torch.ones(T, T, dtype=torch.bool).tril()
    scale = 1.0 / d ** 0.5

    def attn():
        s = torch.matmul(q, k.transpose(-2, -1)) * scale
        s = s.masked_fill(~keep, float('-inf'))
        return torch.matmul(torch.softmax(s, -1), v)

    def fwd():
        with torch.no_grad():
            attn()

    def both():
        for t in (q, k, v):
            t.grad = None
        (attn() * w).sum().backward()

    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass
    base = vm('VmRSS')
    both()
    res = {}
    for name, fn, budget in (('fwd', fwd, 1.0), ('fwd+bwd', both, 2.0)):
        ts = []
        start = time.perf_counter()
        while len(ts) < 3 or time.perf_counter() - start < budget:
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        res[name] = statistics.median(ts) * 1e3
    print('torch %s math path, B 1, heads %d, T %d, d %d, %s, %d threads: fwd %.1f ms  fwd+bwd %.1f ms  '
          'peak %.1f MiB above the inputs (VmHWM %.1f MiB)' % (torch.__version__, H, T, d, a.dtype, a.threads,
                                                              res['fwd'], res['fwd+bwd'], vm('VmHWM') - base,
                                                              vm('VmHWM')))


if __name__ == '__main__':
    main()
