#!/usr/bin/env python3
"""Generate tests/data/numerics_reference.txt: PyTorch's values for special inputs.

Usage (from the repository root, with PyTorch installed):

    python3 tools/gen_numerics_reference.py > tests/data/numerics_reference.txt

tools/gen_reference.py covers every op on ordinary (finite, well-conditioned)
inputs and refuses anything else. This file is its companion for infinities,
NaNs and degenerate parameters: logsumexp, softmax, log_softmax and
cross-entropy with +-inf and NaN logits, var with a correction at or past the
number of elements, det / logdet / inverse of matrices holding inf or NaN.
tests/test_numerics.c reads it and checks nabla against it, in f64 and f32, with
NaN equal to NaN and an infinity equal to the same infinity; docs/OPS.md
("Special values") says what nabla does and where it parts from PyTorch.

The format is gen_reference.py's (see its docstring): for each case the op, its
parameters, the inputs, the output, a weight W and the gradients of
L = sum(out * W) for the inputs that require grad, with values that may be
nan, inf or -inf. A case lists a gradient only where nabla is meant to match
PyTorch's; a case without grad blocks is compared on its output alone (the
docstring of each such case below says why).

Parameters per op:

    logsumexp     keepdim axis...      (no axis: reduce all)
    softmax / log_softmax   axis
    var_axes      correction keepdim axis...
    cross_entropy target...            (one class index per row)
    det / logdet / inverse             none
"""

import zlib

import torch
import torch.nn.functional as F

from refformat import DT, T, block, case_head, leaves_for, write

inf = float('inf')
nan = float('nan')

CASES = []


def case(name, op, inputs, fn, params=(), rg=None, grads=True):
    """inputs: float64 tensors; fn(*leaves) -> output. grads=False: compare the output only."""
    if any(c[0] == name for c in CASES):
        raise SystemExit('duplicate case name ' + name)
    leaves, rg = leaves_for(inputs, rg)
    out = fn(*leaves)
    torch.manual_seed(zlib.crc32(('W:' + name).encode()) & 0x7FFFFFFF)
    W = torch.rand(tuple(out.shape), dtype=DT) + 0.5  # in [0.5, 1.5): no sign flips, no zeros
    blocks = []
    if grads and any(rg):
        diff = [l for l, r in zip(leaves, rg) if r]
        gs = torch.autograd.grad((out * W).sum(), diff, allow_unused=True)
        it = iter(zip(diff, gs))
        for i, r in enumerate(rg):
            if r:
                leaf, g = next(it)
                blocks.append((i, torch.zeros_like(leaf) if g is None else g))
    lines = case_head(name, op, params, leaves, rg) + block('output', out) + block('weight', W)
    for i, g in blocks:
        lines += block('grad %d' % i, g)
    lines.append('end')
    CASES.append((name, '\n'.join(lines)))


# ---- logsumexp: an infinite maximum is shifted by 0 (as torch does), so +inf gives +inf, not NaN
ROWS = [[inf, 0.0, 1.0], [-inf, -inf, -inf], [inf, inf, 0.0], [-inf, 0.0, 1.0], [nan, 1.0, 0.0],
        [inf, -inf, 2.0], [-inf, inf, -inf], [3.0, -1.0, 0.5]]
case('logsumexp_inf_0_1', 'logsumexp', [T([inf, 0.0, 1.0])], lambda x: torch.logsumexp(x, (0,)), params=[0])
case('logsumexp_rows', 'logsumexp', [T(ROWS)], lambda x: torch.logsumexp(x, (1,)), params=[0, 1])
case('logsumexp_rows_keepdim', 'logsumexp', [T(ROWS)], lambda x: torch.logsumexp(x, (1,), keepdim=True),
     params=[1, 1])
case('logsumexp_columns', 'logsumexp', [T(ROWS).t().contiguous()], lambda x: torch.logsumexp(x, (0,)),
     params=[0, 0])
case('logsumexp_all_neg_inf', 'logsumexp', [T([[-inf, -inf], [-inf, -inf]])], lambda x: torch.logsumexp(x, (0, 1)),
     params=[0])

# ---- softmax and log_softmax: -inf is a probability of 0; a +inf or a NaN in a row makes the row NaN (torch too)
SM_ROWS = [[inf, 0.0, 1.0], [-inf, 0.0, 1.0], [-inf, -inf, -inf], [inf, inf, 0.0], [nan, 0.0, 1.0],
           [-inf, -inf, 5.0], [1000.0, -1000.0, 0.0], [0.5, -0.25, 2.0]]
for op, f in (('softmax', torch.softmax), ('log_softmax', torch.log_softmax)):
    case(op + '_rows', op, [T(SM_ROWS)], lambda x, f=f: f(x, 1), params=[1])
    case(op + '_columns', op, [T(SM_ROWS).t().contiguous()], lambda x, f=f: f(x, 0), params=[0])
    case(op + '_inf_0', op, [T([inf, 0.0])], lambda x, f=f: f(x, 0), params=[0])

# ---- cross-entropy with infinite logits: -inf off the target costs nothing, on the target the loss is +inf
case('cross_entropy_neg_inf_logits', 'cross_entropy', [T([[-inf, 0.0, 1.0], [0.5, -inf, 2.0], [-inf, -inf, 3.0]])],
     lambda x: F.cross_entropy(x, torch.tensor([1, 2, 2])), params=[1, 2, 2])
case('cross_entropy_target_neg_inf', 'cross_entropy', [T([[-inf, 0.0, 1.0], [0.5, 1.0, 2.0]])],
     lambda x: F.cross_entropy(x, torch.tensor([0, 1])), params=[0, 1])
case('cross_entropy_pos_inf', 'cross_entropy', [T([[inf, 0.0, 1.0], [0.5, 1.0, 2.0]])],
     lambda x: F.cross_entropy(x, torch.tensor([1, 1])), params=[1, 1])

# ---- var with n - correction <= 0: inf (NaN when every value is equal), as torch. The gradient there is
# compared in tests/test_numerics.c instead (nabla: NaN; torch divides by n - correction unclamped).
VX = T([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [-1.0, 4.0, 0.5], [0.0, 0.0, 7.0]])
for c in range(0, 6):
    case('var_correction_%d' % c, 'var_axes', [VX], lambda x, c=c: torch.var(x, (1,), correction=c),
         params=[c, 0, 1], grads=c < 3)
case('var_all_correction_12', 'var_axes', [VX], lambda x: torch.var(x, (0, 1), correction=12), params=[12, 0, 0, 1],
     grads=False)
# A slice holding an infinity or a NaN has a NaN variance (inf - inf); its gradient is compared in the C test
# (nabla: NaN for the whole slice; torch keeps +-inf at the finite elements).
case('var_inf_nan', 'var_axes', [T([[inf, 1.0, 2.0], [nan, 1.0, 2.0], [-inf, inf, 0.0], [1.0, 2.0, 4.0]])],
     lambda x: torch.var(x, (1,), correction=1), params=[1, 0, 1], grads=False)

# ---- det / logdet / inverse of matrices holding inf or NaN
MATS = [
    [[1.0, nan], [2.0, 3.0]],     # NaN: det, logdet and the inverse are NaN
    [[nan, 0.0], [0.0, 1.0]],
    [[0.0, nan], [0.0, 1.0]],     # NaN and a zero pivot: det NaN
    [[nan, nan], [nan, nan]],
    [[1.0, inf], [2.0, 3.0]],     # inf: LU as LAPACK's gives a finite inverse
    [[inf, 0.0], [0.0, 1.0]],
    [[inf, 1.0], [1.0, inf]],
    [[2.0, 1.0], [1.0, 3.0]],
]
INVERTIBLE = [0, 1, 3, 4, 5, 6, 7]  # no exactly zero pivot (torch refuses [[0, nan], [0, 1]] as singular)
case('det_special', 'det', [T(MATS)], torch.det, grads=False)
case('logdet_special', 'logdet', [T(MATS)], torch.logdet, grads=False)
case('inverse_special', 'inverse', [T([MATS[i] for i in INVERTIBLE])], torch.inverse, grads=False)
case('det_nan_3x3', 'det', [T([[1.0, 0.0, 0.0], [0.0, nan, 0.0], [0.0, 0.0, 0.0]])], torch.det, grads=False)
case('inverse_nan_3x3', 'inverse', [T([[1.0, 0.0, 0.0], [0.0, nan, 0.0], [0.0, 0.0, 2.0]])], torch.inverse,
     grads=False)


def main():
    write('special-value reference values', 'tools/gen_numerics_reference.py', 'tests/data/numerics_reference.txt',
          [text for _, text in CASES])


if __name__ == '__main__':
    main()
