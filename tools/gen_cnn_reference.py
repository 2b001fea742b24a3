#!/usr/bin/env python3
"""Generate tests/data/cnn_torch.safetensors: a convolutional network written by PyTorch, for
tests/test_cnn.c to load into the same network built from nabla's layers.

Usage (from the repository root, with PyTorch installed):

    /usr/bin/python3 tools/gen_cnn_reference.py tests/data

The network is the one `nabla train --model cnn --hidden 128` builds for 8x8 images (the embedded digits) with 10
classes, as an nn.Sequential, so the parameter and buffer names are nabla's module paths:

    0 Conv2d(1, 32, 3, padding=1)  1 BatchNorm2d(32)  2 ReLU  3 MaxPool2d(2)
    4 Conv2d(32, 64, 3, padding=1) 5 BatchNorm2d(64)  6 ReLU  7 MaxPool2d(2)
    8 Flatten  9 Linear(256, 128)  10 ReLU  11 Linear(128, 10)

The file holds its state_dict (float32; num_batches_tracked int64) after a few training steps of SGD on
random data (so the batch-norm statistics and weights are not the initial ones), and:
    input          (6, 1, 8, 8)  a batch of images
    eval_logits    (6, 10)       the network's output in eval mode (running statistics)
    train_logits   (6, 10)       the output of one more forward in training mode (batch statistics)
    after.1.running_mean, after.1.running_var, after.5.running_mean, after.5.running_var
                                 the running statistics after that forward (momentum 0.1)
The output is deterministic (a seeded generator).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from gen_gpt_reference import write


def net():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def main(folder):
    torch.manual_seed(11)
    m = net()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for _ in range(5):
        x = torch.rand(16, 1, 8, 8)
        y = torch.randint(0, 10, (16,))
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    out = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(6, 1, 8, 8)
    out['input'] = x
    m.eval()
    with torch.no_grad():
        out['eval_logits'] = m(x)
        m.train()
        out['train_logits'] = m(x)
    for i in (1, 5):
        out['after.%d.running_mean' % i] = m[i].running_mean.clone()
        out['after.%d.running_var' % i] = m[i].running_var.clone()
    write(os.path.join(folder, 'cnn_torch.safetensors'), out)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'tests/data')
