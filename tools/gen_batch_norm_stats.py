#!/usr/bin/env python3
"""PyTorch's running statistics after three training calls of F.batch_norm, for tests/test_batch_norm.c.

Usage (from the repository root, with PyTorch installed):

    python3 tools/gen_batch_norm_stats.py

prints the C initialisers that test_running_stats_torch embeds. The reference files
(tools/gen_reference.py, tools/gen_hvp_reference.py) hold an op's output and gradients only,
so the in-place update of running_mean and running_var is checked against these values.

The inputs are exact (multiples of 1/4) and made by a formula the test repeats:
call k (0, 1, 2) normalises x of shape (3, 2, 2, 3) (n = 18 values per channel) with
x[i] = ((7 i + 5 k) mod 11) / 4 - 1.25 for the row-major index i, momentum MOMENTA[k], eps 1e-5,
starting from running_mean = (0.5, -0.25), running_var = (1.5, 0.75). Then one call on an (N, C)
input x[i] = ((3 i + 1) mod 7) / 4 - 0.5 of shape (5, 3) with momentum 1 from running_mean =
(0, 0, 0), running_var = (1, 1, 1): the batch's mean and unbiased variance themselves.
"""

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

MOMENTA = [0.1, 0.25, 0.9]


def values(t):
    return ', '.join('%.17g' % v for v in t.reshape(-1).tolist())


def main():
    rm = torch.tensor([0.5, -0.25])
    rv = torch.tensor([1.5, 0.75])
    print('/* tools/gen_batch_norm_stats.py, PyTorch %s */' % torch.__version__)
    for k, m in enumerate(MOMENTA):
        x = torch.tensor([((7 * i + 5 * k) % 11) / 4 - 1.25 for i in range(36)]).reshape(3, 2, 2, 3)
        F.batch_norm(x, rm, rv, None, None, True, m, 1e-5)
        print('{{%s}, {%s}}, /* after call %d, momentum %g */' % (values(rm), values(rv), k + 1, m))
    rm = torch.zeros(3)
    rv = torch.ones(3)
    x = torch.tensor([((3 * i + 1) % 7) / 4 - 0.5 for i in range(15)]).reshape(5, 3)
    F.batch_norm(x, rm, rv, None, None, True, 1.0, 1e-5)
    print('{{%s}, {%s}}, /* (5, 3), momentum 1 */' % (values(rm), values(rv)))


if __name__ == '__main__':
    main()
