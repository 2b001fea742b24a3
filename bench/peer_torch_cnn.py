#!/usr/bin/python3
"""PyTorch (CPU) peer of nabla's bench_cnn: the default CNN's training step and its convolutions
alone, printed as raw lines "who key [arg...] value"; lines starting with '#' are comments. With
--train, the peer of `nabla train --model cnn --data fashion-mnist` instead.

Usage: peer_torch_cnn.py [--step | --conv] [--threads T] [--steps S] [--warmup W] [--label NAME]
                         [--tune-blas]
       peer_torch_cnn.py --train [--data DIR] [--epochs E] [--batch B] [--lr LR] [--seed S] [--hidden H]
                         [--threads T] [--label NAME] [--tune-blas]

  --step (default)  one training step of the network below on a batch of 128 random inputs
                    (torch.randn) with random labels, a new batch each step (made outside the
                    timing): zero_grad(set_to_none=True), forward, F.cross_entropy, backward,
                    torch.optim.Adam (lr 1e-3) step. Prints each step, "NAME cnn_step_ms T V" (the
                    median), "NAME cnn_peak_mib T V" (VmHWM - VmRSS, VmHWM reset just before the model
                    is built) and a RESULT line.
  --conv            F.conv2d forward and backward (input, weight and bias with requires_grad, a fixed
                    random output gradient) at each convolution's shape, N 128, 3x3, padding 1:
                    conv1 (1 -> 32, 28x28) and conv2 (32 -> 64, 14x14). Prints "NAME conv_ms LAYER T V".
  --train           the whole training run of `nabla train --model cnn --data fashion-mnist` at its
                    defaults: the IDX files of --data (default /usr/share/datasets/fashion-mnist,
                    train-/t10k-{images-idx3,labels-idx1}-ubyte, gzipped or not), pixels / 255, no
                    standardisation; the network below without its Dropout (nabla's default
                    --dropout 0) and with a hidden layer of --hidden 256 (nabla train's default
                    --hidden 256 applies to --model cnn too: Linear(3136, 256), Linear(256, 10),
                    824650 parameters), in PyTorch's default initialisation (nabla's Linear layers use
                    Kaiming / Xavier instead: PyTorch's defaults are used here);
                    --epochs 15, --batch 128, shuffled each epoch (torch.randperm, seeded with
                    --seed, default 1), the last partial batch kept; torch.optim.Adam (--lr 2e-3,
                    betas 0.9/0.999, eps 1e-8, no weight decay) with the cosine schedule
                    lr 0.5 (1 + cos(pi s / S)) set before step s (from 0) of the S of the run;
                    after each epoch the test set in eval mode, 1000 images at a time. Prints a line
                    per epoch as nabla does ("epoch E/N  loss L  train acc A  test loss L  test acc A
                    R samples/s", R over the epoch with its evaluation) and "RESULT cnn_train ...
                    test_acc=A train_s=S" (S: all epochs with their evaluations, as nabla's
                    "trained in"; loading the data and building the model are outside it).

  Conv2d(1, 32, 3, padding=1) BatchNorm2d(32) ReLU MaxPool2d(2)
  Conv2d(32, 64, 3, padding=1) BatchNorm2d(64) ReLU MaxPool2d(2)
  Flatten Linear(3136, 128) ReLU Dropout(0.25) Linear(128, 10)

--threads T   torch.set_num_threads(T) (default 1); --tune-blas also openblas_set_num_threads(T).
Defaults: --steps 20 --warmup 3. The environment (thread variables, OMP_WAIT_POLICY, malloc
settings) is the caller's: bench/run.sh runs it as peer_torch.py's "best" configuration.
"""
import argparse
import gzip
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_torch import print_setup, proc_status_kib, set_threads  # noqa: E402

BATCH = 128


def cpu_seconds():
    return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)


def make_cnn(dropout=0.25, hidden=128, classes=10):
    nn = torch.nn
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-5, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64, eps=1e-5, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU(), *drop, nn.Linear(hidden, classes))


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


def read_idx(path):
    """An IDX file (gzipped when its name ends in .gz) as a numpy array of its shape, uint8."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for the shape {dims}")
    return data.reshape(dims)


def load_part(folder, part):
    """(images as float32 (N, 1, H, W) in [0, 1], labels int64) of train or t10k in folder."""
    out = []
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(folder, f"{part}-{kind}-ubyte")
        path = base + ".gz" if os.access(base + ".gz", os.R_OK) else base
        out.append(read_idx(path))
    x, y = out
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{folder}: {x.shape[0]} {part} images, {y.shape[0]} labels")
    x = torch.from_numpy((x.astype(np.float32) / np.float32(255.0)).reshape(x.shape[0], 1, x.shape[1], x.shape[2]))
    return x.contiguous(), torch.from_numpy(y.astype(np.int64))


def evaluate(model, x, y):
    """Mean cross-entropy and accuracy of model on (x, y) in eval mode, 1000 rows at a time."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for lo in range(0, x.shape[0], 1000):
            logits = model(x[lo:lo + 1000])
            yb = y[lo:lo + 1000]
            loss_sum += F.cross_entropy(logits, yb).item() * yb.shape[0]
            correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / x.shape[0], correct / x.shape[0]


def train(a):
    xtr, ytr = load_part(a.data, "train")
    xte, yte = load_part(a.data, "t10k")
    classes = int(max(ytr.max().item(), yte.max().item())) + 1
    torch.manual_seed(a.seed)
    model = make_cnn(dropout=0, hidden=a.hidden, classes=classes)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    gen = torch.Generator().manual_seed(a.seed)
    n = xtr.shape[0]
    per_epoch = (n + a.batch - 1) // a.batch
    total = a.epochs * per_epoch
    print(f"# {a.label} cnn train: {n} training and {xte.shape[0]} test samples of {xtr[0].numel()} features, "
          f"{classes} classes; {sum(p.numel() for p in model.parameters())} parameters")
    sys.stdout.flush()
    step = 0
    acc = 0.0
    cpu0, t_start = cpu_seconds(), time.perf_counter()
    for ep in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for lo in range(0, n, a.batch):
            idx = perm[lo:lo + a.batch]
            xb, yb = xtr[idx], ytr[idx]
            for g in opt.param_groups:  # nb_lr_cosine(lr, step, 0, total, 0)
                g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            step += 1
            lv = loss.item()
            if not math.isfinite(lv):
                print(f"training diverged: the loss is {lv} in epoch {ep + 1}", file=sys.stderr)
                return 1
            loss_sum += lv * yb.shape[0]
            correct += (logits.detach().argmax(1) == yb).sum().item()
        test_loss, acc = evaluate(model, xte, yte)
        print(f"epoch {ep + 1}/{a.epochs}  loss {loss_sum / n:.4f}  train acc {correct / n:.4f}  "
              f"test loss {test_loss:.4f}  test acc {acc:.4f}  {n / (time.perf_counter() - t0):.0f} samples/s")
        sys.stdout.flush()
    secs = time.perf_counter() - t_start
    cpu_per_wall = (cpu_seconds() - cpu0) / secs
    print(f"RESULT cnn_train threads={a.threads} epochs={a.epochs} batch={a.batch} lr={a.lr:g} seed={a.seed} "
          f"test_acc={acc:.4f} train_s={secs:.1f} s_per_epoch={secs / max(a.epochs, 1):.1f} "
          f"cpu_per_wall={cpu_per_wall:.2f}")
    return 0


def main(argv):
    p = argparse.ArgumentParser(description="PyTorch peer of nabla's bench_cnn.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--step", action="store_true")
    g.add_argument("--conv", action="store_true")
    g.add_argument("--train", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--label", default="torch")
    p.add_argument("--tune-blas", action="store_true")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="--train: folder of IDX files")
    p.add_argument("--epochs", type=int, default=15, help="--train")
    p.add_argument("--batch", type=int, default=128, help="--train")
    p.add_argument("--lr", type=float, default=2e-3, help="--train")
    p.add_argument("--seed", type=int, default=1, help="--train")
    p.add_argument("--hidden", type=int, default=256, help="--train: the hidden linear layer's width")
    a = p.parse_args(argv[1:])
    a.quick = False
    set_threads(a.threads, a.tune_blas)
    print_setup("cnn train" if a.train else "cnn conv" if a.conv else "cnn step", a)
    print(f"# {a.label} mkldnn available: {torch.backends.mkldnn.is_available()}")
    sys.stdout.flush()
    if a.train:
        return train(a)
    (bench_conv if a.conv else bench_step)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
