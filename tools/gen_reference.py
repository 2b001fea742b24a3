#!/usr/bin/env python3
"""Generate tests/data/reference.txt: PyTorch reference values for every op.

Usage (from the repository root, with PyTorch installed):

    python3 tools/gen_reference.py > tests/data/reference.txt

The output is deterministic: every case seeds torch from a CRC32 of its name,
and all arithmetic is float64 on the CPU.

For each case the file holds the op, its parameters, the input tensors, the
output of the op, a weight tensor W of the output's shape, and the gradients of
L = sum(out * W) with respect to every input that requires grad.

File format (whitespace-separated tokens; tools/refformat.py writes it and
tests/refdata.h reads it):

    # comment lines (only at the top of the file)
    cases <N>                          number of cases that follow
    case <name>
    op <op>                            the nabla op without its nb_ prefix
    params <n> <v1> ... <vn>           n numeric parameters (meaning per op, below)
    inputs <k>                         number of input tensors
    input <rg> <rank> <d0> ... <dr-1>  rg: 1 when the input requires grad
    <values>                           prod(d) values, row-major, on one line
    ... (k input blocks)
    output <rank> <dims...>
    <values>
    weight <rank> <dims...>            W, the same shape as the output
    <values>
    grad <i> <rank> <dims...>          dL/d input i, one block per input with rg 1
    <values>
    end

A tensor of rank 0 has no dims and one value; a tensor with a size-0 axis has
an empty values line. Values are printed with '%.17g' (exact round-trip).

Parameters per op (all others take none):

    scale c | add_scalar c | pow p | leaky_relu alpha
    sum_axes / mean_axes / max_axes   keepdim axis...   (no axis: reduce all)
    reshape       shape...            (may hold one -1; none: rank 0)
    transpose     d0 d1
    permute       perm...
    slice         axis start stop
    expand        shape...
    concat        axis                (the inputs are the tensors to join)
    to            dtype               (0: f32, 1: f64)
    dense         act                 (0 none, 1 relu, 2 tanh, 3 sigmoid; inputs x, w and maybe b)
    attention     causal scale kind   (inputs q, k, v and, kind 1, an additive mask; kind 2, a 0/1
                                       keep mask without grad, nabla's i64 mask)
    batch_norm    training momentum eps has_gamma has_beta has_running
                                      (inputs x [gamma] [beta] [running_mean running_var], the running
                                       pair without grad and as given before a training call updates it)

where: inputs are cond (0/1, no grad), a, b. gt / lt / eq: no input requires
grad (the output is 0/1 as float64 and carries no graph), so there are no
grad blocks. sign: the gradient is zero.
"""

import zlib

import torch
import torch.nn.functional as F

from refformat import ce_ex, ce_ex_cases, layer_cases, keep_mask, sdpa, DT, T, block, case_head, leaves_for, rnd, rnd_away, seed_for, write

torch.set_default_dtype(torch.float64)

CASES = []


def case(name, op, inputs, fn, params=(), rg=None):
    """inputs: list of float64 tensors; fn(*leaves) -> output tensor."""
    if any(c[0] == name for c in CASES):
        raise SystemExit('duplicate case name ' + name)
    leaves, rg = leaves_for(inputs, rg)
    out = fn(*leaves)
    if out.dtype == torch.bool:
        out = out.to(DT)
    # W is drawn after the inputs; seeded from the name so it is stable too.
    torch.manual_seed((zlib.crc32(('W:' + name).encode())) & 0x7FFFFFFF)
    W = rnd(tuple(out.shape), -1.0, 1.0)
    grads = []
    if any(rg):
        L = (out * W).sum()
        diff = [l for l, r in zip(leaves, rg) if r]
        if L.requires_grad:
            gs = torch.autograd.grad(L, diff, allow_unused=True)
        else:
            gs = [None] * len(diff)
        it = iter(zip(diff, gs))
        for i, r in enumerate(rg):
            if r:
                leaf, g = next(it)
                if g is None:
                    g = torch.zeros_like(leaf)
                grads.append((i, g))
    for i, g in grads:
        if not torch.isfinite(g).all():
            raise SystemExit('non-finite gradient in case ' + name)
    if not torch.isfinite(out).all():
        raise SystemExit('non-finite output in case ' + name)
    lines = case_head(name, op, params, leaves, rg) + block('output', out) + block('weight', W)
    for i, g in grads:
        lines += block('grad %d' % i, g)
    lines.append('end')
    CASES.append((name, '\n'.join(lines)))


# --------------------------------------------------------------------------
# Elementwise binary ops, broadcasting in each operand position.
# --------------------------------------------------------------------------

BCAST = [
    ('same', (2, 3), (2, 3)),
    ('row', (2, 3), (3,)),
    ('row_first', (3,), (2, 3)),
    ('col_row', (2, 1), (1, 3)),
    ('3d', (4, 1, 3), (2, 3)),
    ('3d_rev', (2, 3), (4, 1, 3)),
    ('scalar_b', (2, 3), ()),
    ('scalar_a', (), (2, 3)),
    ('size1', (1, 3, 1), (2, 1, 4)),
]

BINARY = {
    'add': (torch.add, lambda s, n: rnd(s), lambda s, n: rnd(s)),
    'sub': (torch.sub, lambda s, n: rnd(s), lambda s, n: rnd(s)),
    'mul': (torch.mul, lambda s, n: rnd(s), lambda s, n: rnd(s)),
    'div': (torch.div, lambda s, n: rnd(s), lambda s, n: rnd_away(s)),
    'pow_t': (torch.pow, lambda s, n: rnd(s, 0.5, 2.0), lambda s, n: rnd(s, -2.0, 2.5)),
}

# Non-commutative ops take every layout; the others a subset that still
# broadcasts in each operand position.
COMMUTATIVE_TAGS = ('same', 'row_first', 'col_row', '3d', 'scalar_a')
for op, (fn, ga, gb) in BINARY.items():
    for tag, sa, sb in BCAST:
        if op in ('add', 'mul', 'pow_t') and tag not in COMMUTATIVE_TAGS:
            continue
        name = '%s_%s' % (op, tag)
        seed_for(name)
        case(name, op, [ga(sa, 0), gb(sb, 1)], fn)

# One operand without requires_grad.
seed_for('mul_nograd_b')
case('mul_nograd_b', 'mul', [rnd((3, 2)), rnd((2,))], torch.mul, rg=[True, False])
seed_for('sub_nograd_a')
case('sub_nograd_a', 'sub', [rnd((2, 1)), rnd((2, 4))], torch.sub, rg=[False, True])

# pow_t with zeros in the base: d/dp is 0 there (p >= 0), d/da follows p a^(p-1).
case('pow_t_zero_base', 'pow_t', [T([[0.0, 1.5, 0.0], [2.0, 0.0, 0.7]]), T([[2.0, 0.5, 1.0], [-1.5, 3.0, 2.5]])],
     torch.pow)
# Integer exponents on negative bases (d/dp not defined there: only a requires grad).
case('pow_t_neg_base_int_p', 'pow_t', [T([[-1.5, 2.0, -0.5], [0.75, -2.0, 1.25]]), T([2.0, 3.0, -1.0])],
     torch.pow, rg=[True, False])

# --------------------------------------------------------------------------
# Comparisons and where.
# --------------------------------------------------------------------------

for op, fn in (('gt', torch.gt), ('lt', torch.lt), ('eq', torch.eq)):
    a = T([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    b = T([2.0, 0.5, 3.0])
    case(op + '_bcast', op, [a, b], fn, rg=[False, False])
case('eq_scalar', 'eq', [T([[1.0, 2.0], [2.0, 0.0]]), T(2.0)], torch.eq, rg=[False, False])


def where_fn(c, a, b):
    return torch.where(c != 0, a, b)


seed_for('where_same')
case('where_same', 'where', [T([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), rnd((2, 3)), rnd((2, 3))], where_fn,
     rg=[False, True, True])
seed_for('where_bcast')
case('where_bcast', 'where', [T([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]), rnd((4, 3)), rnd((4, 1))], where_fn,
     rg=[False, True, True])
seed_for('where_scalar_b')
case('where_scalar_b', 'where', [T([1.0, 0.0, 0.0, 1.0]), rnd((3, 4)), T(0.25)], where_fn,
     rg=[False, True, True])
seed_for('where_cond_bcast')
case('where_cond_bcast', 'where', [T([[1.0], [0.0]]), rnd((2, 3)), rnd((3,))], where_fn,
     rg=[False, True, True])

# --------------------------------------------------------------------------
# Elementwise with a constant.
# --------------------------------------------------------------------------

seed_for('neg')
case('neg', 'neg', [rnd((2, 3))], torch.neg)
for tag, c in (('2p5', 2.5), ('neg0p5', -0.5), ('zero', 0.0)):
    name = 'scale_' + tag
    seed_for(name)
    case(name, 'scale', [rnd((3, 2))], lambda x, c=c: x * c, params=[c])
for tag, c in (('1p5', 1.5), ('neg3', -3.0)):
    name = 'add_scalar_' + tag
    seed_for(name)
    case(name, 'add_scalar', [rnd((2, 2, 2))], lambda x, c=c: x + c, params=[c])

POW = [
    ('2', 2.0, lambda s: rnd(s)),
    ('2_zero', 2.0, lambda s: T([[0.0, -1.5, 2.0], [0.5, 0.0, -0.25]])),
    ('3', 3.0, lambda s: rnd(s)),
    ('0p5', 0.5, lambda s: rnd(s, 0.2, 3.0)),
    ('neg1', -1.0, lambda s: rnd_away(s)),
    ('0', 0.0, lambda s: rnd(s)),
    ('1p5', 1.5, lambda s: rnd(s, 0.1, 3.0)),
    ('neg0p5', -0.5, lambda s: rnd(s, 0.2, 3.0)),
    ('neg2', -2.0, lambda s: rnd_away(s)),
]
for tag, p, gen in POW:
    name = 'pow_' + tag
    seed_for(name)
    case(name, 'pow', [gen((2, 3))], lambda x, p=p: torch.pow(x, p), params=[p])

# --------------------------------------------------------------------------
# Elementwise unary.
# --------------------------------------------------------------------------

UNARY = [
    ('exp', torch.exp, lambda: rnd((2, 3), -3.0, 3.0)),
    ('exp_scalar', torch.exp, lambda: T(0.75)),
    ('log', torch.log, lambda: rnd((2, 3), 0.1, 5.0)),
    ('sqrt', torch.sqrt, lambda: rnd((3, 2), 0.1, 5.0)),
    ('abs', torch.abs, lambda: T([[-1.5, 0.0, 2.25], [0.5, -0.125, 3.0]])),
    ('sin', torch.sin, lambda: rnd((2, 3), -4.0, 4.0)),
    ('cos', torch.cos, lambda: rnd((2, 3), -4.0, 4.0)),
    ('tanh', torch.tanh, lambda: rnd((2, 3), -3.0, 3.0)),
    ('tanh_large', torch.tanh, lambda: T([-1e4, -30.0, -0.5, 0.0, 0.5, 30.0, 1e4])),
    ('sigmoid', torch.sigmoid, lambda: rnd((2, 3), -4.0, 4.0)),
    ('sigmoid_large', torch.sigmoid, lambda: T([-1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4])),
    ('relu', torch.relu, lambda: T([[-1.5, 0.0, 2.25], [0.5, -0.125, 3.0]])),
    ('gelu', lambda x: F.gelu(x, approximate='none'), lambda: rnd((2, 4), -3.0, 3.0)),
    ('gelu_tails', lambda x: F.gelu(x, approximate='none'), lambda: T([-10.0, -5.0, -0.5, 0.0, 0.5, 5.0, 10.0])),
    ('erf', torch.erf, lambda: rnd((2, 3), -2.5, 2.5)),
    ('erf_tails', torch.erf, lambda: T([-6.0, -3.0, 0.0, 1e-3, 3.0, 6.0])),
    ('sign', torch.sign, lambda: T([[-1.5, 0.0, 2.25], [0.5, -0.125, 0.0]])),
    ('sin_size1', torch.sin, lambda: rnd((1, 3, 1), -2.0, 2.0)),
]
for name, fn, gen in UNARY:
    op = name.split('_')[0]
    seed_for(name)
    case(name, op, [gen()], fn)

for tag, alpha in (('0p01', 0.01), ('0p2', 0.2)):
    name = 'leaky_relu_' + tag
    case(name, 'leaky_relu', [T([[-1.5, 0.0, 2.25, -0.25], [0.5, -3.0, 3.0, 0.0]])],
         lambda x, a=alpha: F.leaky_relu(x, negative_slope=a), params=[alpha])

# Transformer ops: gelu_tanh (unary), tril / triu (params k), masked_fill
# (inputs x and a 0/1 mask without grad; params value), argmax (params axis
# keepdim; an i64 output, no grad), arange (params start end step; one rank-0
# input without grad whose dtype is the result's).
GELU_TANH = lambda x: F.gelu(x, approximate='tanh')
seed_for('gelu_tanh')
case('gelu_tanh', 'gelu_tanh', [rnd((3, 4), -4.0, 4.0)], GELU_TANH)
case('gelu_tanh_tails', 'gelu_tanh', [T([-12.0, -8.0, -5.0, -3.0, -0.5, 0.0, 0.5, 3.0, 8.0, 12.0])], GELU_TANH)
seed_for('gelu_tanh_size1')
case('gelu_tanh_size1', 'gelu_tanh', [rnd((1, 3, 1), -2.0, 2.0)], GELU_TANH)
for k in (0, 1, -1, 3, -4):
    tag = str(k).replace('-', 'neg')
    seed_for('tril_' + tag)
    case('tril_' + tag, 'tril', [rnd((2, 3, 4))], lambda x, k=k: torch.tril(x, k), params=[k])
    seed_for('triu_' + tag)
    case('triu_' + tag, 'triu', [rnd((4, 3))], lambda x, k=k: torch.triu(x, k), params=[k])
seed_for('masked_fill')
case('masked_fill', 'masked_fill', [rnd((3, 4)), T([[1.0, 0.0, 0.0, 1.0]])],
     lambda x, m: x.masked_fill(m != 0, -1e4), params=[-1e4], rg=[True, False])
seed_for('masked_fill_full')
case('masked_fill_full', 'masked_fill', [rnd((2, 3)), T([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])],
     lambda x, m: x.masked_fill(m != 0, 2.5), params=[2.5], rg=[True, False])
case('argmax_1', 'argmax', [T([[1.0, 3.0, 3.0, 0.0], [5.0, -1.0, 5.0, 5.0], [-2.0, -3.0, -2.5, -1.0]])],
     lambda x: torch.argmax(x, 1), params=[1, 0], rg=[False])
seed_for('argmax_0_keep')
case('argmax_0_keep', 'argmax', [rnd((4, 3))], lambda x: torch.argmax(x, 0, keepdim=True), params=[0, 1],
     rg=[False])
# topk (params k axis largest): values (with gradients) and indices (i64, no grad); distinct values, so
# that the order is PyTorch's whatever its tie rule.
seed_for('topk_3_1')
case('topk_3_1', 'topk', [rnd((3, 5))], lambda x: torch.topk(x, 3, 1)[0], params=[3, 1, 1])
seed_for('topk_2_0_small')
case('topk_2_0_small', 'topk', [rnd((4, 3))], lambda x: torch.topk(x, 2, 0, largest=False)[0], params=[2, 0, 0])
seed_for('topk_indices')
case('topk_indices', 'topk_indices', [rnd((2, 6))], lambda x: torch.topk(x, 4, -1)[1], params=[4, -1, 1],
     rg=[False])
for tag, a, b, st in (('int', 0.0, 7.0, 1.0), ('frac', -1.0, 2.0, 0.3), ('neg', 5.0, -4.5, -1.5),
                      ('empty', 2.0, 2.0, 1.0)):
    case('arange_' + tag, 'arange', [T(0.0)], lambda x, a=a, b=b, st=st: torch.arange(a, b, st),
         params=[a, b, st], rg=[False])

# --------------------------------------------------------------------------
# Conversion and copies.
# --------------------------------------------------------------------------

seed_for('to_f64')
case('to_f64', 'to', [rnd((2, 3))], lambda x: x.to(torch.float64), params=[1])
seed_for('to_f32')
case('to_f32', 'to', [rnd((3, 2))], lambda x: x.to(torch.float32), params=[0])
seed_for('clone')
case('clone', 'clone', [rnd((2, 3, 2))], torch.clone)
seed_for('contiguous')
case('contiguous', 'contiguous', [rnd((3, 2))], lambda x: x.contiguous())

# --------------------------------------------------------------------------
# Reductions.
# --------------------------------------------------------------------------

for name, shape in (('sum_2d', (2, 3)), ('sum_3d', (2, 3, 4)), ('sum_scalar', ()), ('sum_1d', (5,))):
    seed_for(name)
    case(name, 'sum', [rnd(shape)], torch.sum)
for name, shape in (('mean_2d', (2, 3)), ('mean_3d', (2, 3, 4)), ('mean_1', (1,))):
    seed_for(name)
    case(name, 'mean', [rnd(shape)], torch.mean)

AXES = [
    ('ax0', (2, 3, 4), [0]),
    ('ax1', (2, 3, 4), [1]),
    ('ax2', (2, 3, 4), [2]),
    ('axm1', (2, 3, 4), [-1]),
    ('axm3', (2, 3, 4), [-3]),
    ('ax02', (2, 3, 4), [0, 2]),
    ('ax1m1', (2, 3, 4), [1, -1]),
    ('ax20', (2, 3, 4), [2, 0]),
    ('all', (2, 3, 4), []),
    ('size1', (3, 1, 2), [1]),
    ('vec', (5,), [0]),
]
RED = {
    'sum_axes': lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    'mean_axes': lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    'max_axes': lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
}
# (tag, keepdim) pairs per op.
RED_CASES = {
    'sum_axes': [('ax0', 0), ('ax1', 1), ('axm1', 0), ('ax02', 1), ('ax1m1', 0), ('ax20', 0), ('all', 0),
                 ('all', 1), ('size1', 0), ('vec', 0)],
    'mean_axes': [('ax1', 0), ('ax2', 1), ('axm3', 0), ('ax02', 0), ('ax1m1', 1), ('all', 0), ('all', 1),
                  ('size1', 1), ('vec', 0)],
    'max_axes': [('ax0', 0), ('ax1', 1), ('ax2', 0), ('axm1', 1), ('axm3', 0), ('ax02', 0), ('ax1m1', 1),
                 ('ax20', 0), ('all', 0), ('all', 1), ('size1', 0), ('vec', 0)],
}
for op, fn in RED.items():
    for tag, shape, axes in AXES:
        for keep in (False, True):
            if (tag, int(keep)) not in RED_CASES[op]:
                continue
            name = '%s_%s_%s' % (op, tag, 'keep' if keep else 'drop')
            seed_for(name)
            x = rnd(shape)
            dims = list(axes) if axes else list(range(len(shape)))
            case(name, op, [x], lambda x, d=dims, k=keep, fn=fn: fn(x, d, k), params=[1 if keep else 0] + axes)

# Ties: amax splits the gradient evenly among the tied maxima.
TIES = T([[[3.0, 1.0, 3.0, 2.0], [0.0, 0.0, -1.0, 0.0], [5.0, 5.0, 5.0, 5.0]],
          [[-2.0, 4.0, 4.0, 1.0], [2.0, 2.0, 2.0, -3.0], [1.0, 7.0, 0.0, 7.0]]])
for tag, axes, keep in (('ax2', [2], False), ('ax0', [0], True), ('ax12', [1, 2], False), ('all', [], True)):
    name = 'max_axes_ties_' + tag
    dims = list(axes) if axes else [0, 1, 2]
    case(name, 'max_axes', [TIES], lambda x, d=dims, k=keep: torch.amax(x, dim=d, keepdim=k),
         params=[1 if keep else 0] + axes)

# --------------------------------------------------------------------------
# Shape ops.
# --------------------------------------------------------------------------

for name, shape, new in (('reshape_2d', (2, 3, 4), [4, 6]),
                         ('reshape_infer', (2, 3, 4), [6, -1]),
                         ('reshape_flat', (2, 3, 4), [-1]),
                         ('reshape_size1', (2, 3), [1, 3, 1, 2]),
                         ('reshape_to_scalar', (1, 1), []),
                         ('reshape_from_scalar', (), [1, 1])):
    seed_for(name)
    case(name, 'reshape', [rnd(shape)], lambda x, s=new: x.reshape(s), params=new)

for name, shape, d0, d1 in (('transpose_2d', (2, 3), 0, 1),
                            ('transpose_3d_02', (2, 3, 4), 0, 2),
                            ('transpose_3d_neg', (2, 3, 4), -1, -2),
                            ('transpose_same', (2, 3), 1, 1),
                            ('transpose_size1', (1, 3, 2), 0, 1)):
    seed_for(name)
    case(name, 'transpose', [rnd(shape)], lambda x, a=d0, b=d1: x.transpose(a, b), params=[d0, d1])

for name, shape, perm in (('permute_3d_201', (2, 3, 4), [2, 0, 1]),
                          ('permute_3d_120', (2, 3, 4), [1, 2, 0]),
                          ('permute_4d', (2, 1, 3, 2), [3, 1, 0, 2]),
                          ('permute_neg', (2, 3, 4), [-1, 0, -2])):
    seed_for(name)
    case(name, 'permute', [rnd(shape)], lambda x, p=perm: x.permute(p), params=perm)


def py_slice(x, axis, start, stop):
    idx = [slice(None)] * x.dim()
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]


for name, shape, axis, start, stop in (('slice_ax0', (4, 3), 0, 1, 3),
                                       ('slice_ax1', (2, 5, 3), 1, 2, 5),
                                       ('slice_neg_axis', (2, 3, 6), -1, 1, 4),
                                       ('slice_neg_start', (6, 2), 0, -4, -1),
                                       ('slice_clamp', (2, 5), 1, 3, 100),
                                       ('slice_empty', (3, 4), 1, 2, 2),
                                       ('slice_neg_stop', (5,), 0, 0, -2)):
    seed_for(name)
    case(name, 'slice', [rnd(shape)], lambda x, a=axis, s=start, e=stop: py_slice(x, a, s, e),
         params=[axis, start, stop])

for name, shape, new in (('expand_row', (3,), [2, 3]),
                         ('expand_col', (3, 1), [3, 4]),
                         ('expand_lead', (3, 1), [2, 3, 4]),
                         ('expand_scalar', (), [2, 3]),
                         ('expand_mid', (2, 1, 3), [2, 4, 3]),
                         ):
    seed_for(name)
    case(name, 'expand', [rnd(shape)], lambda x, s=new: x.expand(s), params=new)

for name, shapes, axis in (('concat2_ax0', [(2, 3, 2), (1, 3, 2)], 0),
                           ('concat2_ax1', [(2, 3, 2), (2, 2, 2)], 1),
                           ('concat2_axm1', [(2, 1), (2, 3)], -1),
                           ('concat3_ax1', [(2, 2, 2), (2, 1, 2), (2, 3, 2)], 1),
                           ('concat3_ax2', [(2, 2, 1), (2, 2, 3), (2, 2, 2)], 2),
                           ('concat3_1d', [(2,), (1,), (3,)], 0)):
    seed_for(name)
    case(name, 'concat', [rnd(s) for s in shapes], lambda *xs, a=axis: torch.cat(xs, dim=a), params=[axis])

# --------------------------------------------------------------------------
# matmul.
# --------------------------------------------------------------------------

for name, sa, sb in (('matmul_2d', (3, 4), (4, 2)),
                     ('matmul_mv', (3, 4), (4,)),
                     ('matmul_vm', (4,), (4, 2)),
                     ('matmul_vv', (4,), (4,)),
                     ('matmul_outer', (3, 1), (1, 2)),
                     ('matmul_3d', (2, 3, 4), (2, 4, 5)),
                     ('matmul_3d_2d', (2, 3, 4), (4, 5)),
                     ('matmul_2d_3d', (3, 4), (2, 4, 2)),
                     ('matmul_v_3d', (4,), (2, 4, 3)),
                     ('matmul_bcast_1', (1, 3, 4), (2, 4, 2)),
                     ('matmul_4d_3d', (2, 1, 3, 4), (5, 4, 2)),
                     ('matmul_4d_4d', (2, 1, 2, 3), (1, 3, 3, 2))):
    seed_for(name)
    case(name, 'matmul', [rnd(sa), rnd(sb)], torch.matmul)

# --------------------------------------------------------------------------
# dense: act(x w^T + b), F.linear then the activation; params: act
# (0 none, 1 relu, 2 tanh, 3 sigmoid); without the bias there are two inputs.
# --------------------------------------------------------------------------

ACTS = (lambda y: y, torch.relu, torch.tanh, torch.sigmoid)
for name, sx, bias, act in (('dense_none', (3, 4), True, 0), ('dense_relu', (3, 4), True, 1),
                            ('dense_tanh_3d', (2, 3, 4), True, 2), ('dense_sigmoid_nobias', (3, 4), False, 3),
                            ('dense_relu_vector', (4,), True, 1)):
    seed_for(name)
    ins = [rnd(sx), rnd((5, 4))] + ([rnd((5,))] if bias else [])
    case(name, 'dense', ins, lambda x, w, b=None, a=act: ACTS[a](F.linear(x, w, b)), params=[act])

# --------------------------------------------------------------------------
# softmax family and classification losses (targets travel as params).
# --------------------------------------------------------------------------

for name, shape, axis in (('softmax_last', (3, 5), -1), ('softmax_axis0', (4, 3), 0),
                          ('softmax_3d_mid', (2, 3, 4), 1)):
    seed_for(name)
    case(name, 'softmax', [rnd(shape, -3, 3)], lambda x, a=axis: torch.softmax(x, dim=a), params=[axis])
    seed_for('log_' + name)
    case('log_' + name, 'log_softmax', [rnd(shape, -3, 3)], lambda x, a=axis: torch.log_softmax(x, dim=a),
         params=[axis])
seed_for('softmax_huge')
case('softmax_huge', 'softmax', [T([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])], lambda x: torch.softmax(x, 1),
     params=[1])
case('log_softmax_huge', 'log_softmax', [T([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])],
     lambda x: torch.log_softmax(x, 1), params=[1])
for name, n, c in (('cross_entropy_4x3', 4, 3), ('cross_entropy_6x10', 6, 10)):
    seed_for(name)
    targets = [int(v) for v in torch.randint(0, c, (n,))]
    case(name, 'cross_entropy', [rnd((n, c), -3, 3)],
         lambda x, t=targets: torch.nn.functional.cross_entropy(x, torch.tensor(t)), params=targets)
    seed_for('nll_' + name)
    case('nll_' + name, 'nll_loss', [rnd((n, c), -3, 0)],
         lambda x, t=targets: torch.nn.functional.nll_loss(x, torch.tensor(t)), params=targets)
case('cross_entropy_huge', 'cross_entropy', [T([[1e4, -1e4, 0.0], [-1e4, 3.0, 1e4]])],
     lambda x: torch.nn.functional.cross_entropy(x, torch.tensor([1, 2])), params=[1, 2])

# nb_cross_entropy_ex (refformat.CE_EX_CASES): params reduction ignore_index label_smoothing, then the targets.
for name, shape, red, ign, eps, t, flat in ce_ex_cases():
    seed_for(name)
    case(name, 'cross_entropy_ex', [rnd(shape, -3, 3)],
         lambda x, t=t, r=red, g=ign, e=eps: ce_ex(x, t, r, g, e), params=[red, ign, eps] + flat)

# --------------------------------------------------------------------------
# layer norm over the last axis (params: eps).
# --------------------------------------------------------------------------

for name, shape in (('layer_norm_2d', (3, 5)), ('layer_norm_3d', (2, 3, 4))):
    seed_for(name)
    d = shape[-1]
    case(name, 'layer_norm', [rnd(shape), rnd_away((d,)), rnd((d,))],
         lambda x, g, b, d=d: torch.nn.functional.layer_norm(x, (d,), g, b, 1e-5), params=[1e-5])
    seed_for(name + '_plain')
    case(name + '_plain', 'layer_norm', [rnd(shape)],
         lambda x, d=d: torch.nn.functional.layer_norm(x, (d,), None, None, 1e-5), params=[1e-5])

# --------------------------------------------------------------------------
# scaled dot-product attention (params: causal scale mask_kind; mask_kind 0
# none, 1 an additive float mask (input 3), 2 a keep/drop mask given as 0/1
# values (input 3, no grad) that nabla takes as i64). torch 1.13 has no
# F.scaled_dot_product_attention: its math path, written out.
# --------------------------------------------------------------------------



seed_for('attention_plain')
case('attention_plain', 'attention', [rnd((2, 4, 5)), rnd((2, 6, 5)), rnd((2, 6, 3))],
     lambda q, k, v: sdpa(q, k, v), params=[0, 0, 0])
seed_for('attention_causal_kv')
case('attention_causal_kv', 'attention', [rnd((2, 3, 4)), rnd((2, 7, 4)), rnd((2, 7, 5))],
     lambda q, k, v: sdpa(q, k, v, causal=True, scale=0.3), params=[1, 0.3, 0])
seed_for('attention_causal_square')
case('attention_causal_square', 'attention', [rnd((3, 6, 4)), rnd((3, 6, 4)), rnd((3, 6, 2))],
     lambda q, k, v: sdpa(q, k, v, causal=True), params=[1, 0, 0])
seed_for('attention_float_mask_bcast')
case('attention_float_mask_bcast', 'attention', [rnd((2, 2, 3, 4)), rnd((1, 2, 5, 4)), rnd((2, 5, 3)), rnd((3, 5))],
     lambda q, k, v, m: sdpa(q, k, v, m, kind=1), params=[0, 0, 1])
seed_for('attention_keep_mask_causal')
case('attention_keep_mask_causal', 'attention',
     [rnd((2, 1, 4, 3)), rnd((2, 3, 6, 3)), rnd((3, 6, 2)), keep_mask((2, 1, 4, 6))],
     lambda q, k, v, m: sdpa(q, k, v, m, causal=True, kind=2), params=[1, 0, 2], rg=[True, True, True, False])


# --------------------------------------------------------------------------
# layers: 2-D convolution and its gradient ops, pooling, batch norm (their
# parameters: tools/refformat.py, CONV_CASES, POOL_CASES, BATCH_NORM_CASES).
# --------------------------------------------------------------------------

for name, op, inputs, fn, params, rg in layer_cases():
    case(name, op, inputs, fn, params=params, rg=rg)

# --------------------------------------------------------------------------
# more elementwise ops and composites.
# --------------------------------------------------------------------------

seed_for('log1p')
case('log1p', 'log1p', [rnd((3, 4), -0.9, 2.0)], torch.log1p)
seed_for('expm1')
case('expm1', 'expm1', [rnd((3, 4))], torch.expm1)
case('softplus', 'softplus', [T([[-30.0, -1.0, 0.0, 0.5], [3.0, 19.0, 21.0, 40.0]])],
     torch.nn.functional.softplus)
seed_for('flip_1')
case('flip_1', 'flip', [rnd((3, 4))], lambda x: torch.flip(x, [1]), params=[1])
seed_for('flip_0')
case('flip_0', 'flip', [rnd((2, 3, 2))], lambda x: torch.flip(x, [0]), params=[0])
seed_for('maximum')
case('maximum', 'maximum', [rnd((3, 4)), rnd((4,))], torch.maximum)
case('maximum_ties', 'maximum', [T([1.0, 2.0, 3.0]), T([1.0, 0.0, 3.0])], torch.maximum)
seed_for('minimum')
case('minimum', 'minimum', [rnd((2, 1)), rnd((1, 3))], torch.minimum)
seed_for('clamp')
case('clamp', 'clamp', [rnd((3, 4))], lambda x: torch.clamp(x, -0.5, 0.7), params=[-0.5, 0.7])
seed_for('logsumexp')
case('logsumexp', 'logsumexp', [rnd((3, 4), -3, 3)], lambda x: torch.logsumexp(x, 1), params=[1])
seed_for('var')
case('var', 'var', [rnd((3, 4))], lambda x: torch.var(x, 0, keepdim=True), params=[0])
seed_for('norm')
case('norm', 'norm', [rnd((3, 4))], lambda x: torch.linalg.vector_norm(x))

# --------------------------------------------------------------------------
# inverse, det, logdet (well-conditioned: uniform + 3 I).
# --------------------------------------------------------------------------

for name, shape in (('inverse_3x3', (3, 3)), ('inverse_batched', (2, 4, 4))):
    seed_for(name)
    m = rnd(shape, -1, 1) + 3 * torch.eye(shape[-1], dtype=DT)
    case(name, 'inverse', [m], torch.inverse)
    case(name.replace('inverse', 'det'), 'det', [m], torch.det)
    case(name.replace('inverse', 'logdet'), 'logdet', [m], torch.logdet)

# --------------------------------------------------------------------------
# indexing (params: axis, then the indices; gather's indices have the input's shape).
# --------------------------------------------------------------------------

seed_for('index_select_0')
case('index_select_0', 'index_select', [rnd((3, 4))],
     lambda x: torch.index_select(x, 0, torch.tensor([2, 0, 2, 1])), params=[0, 2, 0, 2, 1])
seed_for('index_select_1')
case('index_select_1', 'index_select', [rnd((2, 3, 2))],
     lambda x: torch.index_select(x, 1, torch.tensor([1, 1])), params=[1, 1, 1])
seed_for('gather_1')
GI = [[1, 0, 2], [2, 2, 0]]
case('gather_1', 'gather', [rnd((2, 3))], lambda x: torch.gather(x, 1, torch.tensor(GI)),
     params=[1] + [v for r in GI for v in r])

seed_for('cumsum_1')
case('cumsum_1', 'cumsum', [rnd((3, 4))], lambda x: torch.cumsum(x, 1), params=[1])
seed_for('cumsum_0')
case('cumsum_0', 'cumsum', [rnd((3, 2, 2))], lambda x: torch.cumsum(x, 0), params=[0])
seed_for('pad_2d')
# nabla's pads run from the first axis; torch's F.pad from the last.
case('pad_2d', 'pad', [rnd((2, 3))],
     lambda x: torch.nn.functional.pad(x, (2, 1, 1, 0), value=0.5), params=[0.5, 1, 0, 2, 1])

seed_for('stack_1')
case('stack_1', 'stack', [rnd((2, 3)), rnd((2, 3))], lambda a, b: torch.stack([a, b], 1), params=[1])
seed_for('unsqueeze_m1')
case('unsqueeze_m1', 'unsqueeze', [rnd((2, 3))], lambda x: x.unsqueeze(-1), params=[-1])
seed_for('squeeze_1')
case('squeeze_1', 'squeeze', [rnd((2, 1, 3))], lambda x: x.squeeze(1), params=[1])
seed_for('split_second')
case('split_second', 'split_second', [rnd((2, 5))], lambda x: torch.split(x, [2, 3], 1)[1], params=[1, 2, 3])

# --------------------------------------------------------------------------
# einsum: the spec travels in the op name, "einsum:<spec>".
# --------------------------------------------------------------------------

for i, (spec, shapes) in enumerate((('ij,jk->ik', [(3, 4), (4, 2)]), ('ii->', [(3, 3)]), ('ii->i', [(3, 3)]),
                                     ('ij->ji', [(2, 3)]), ('i,j->ij', [(3,), (2,)]), ('i,i->', [(4,), (4,)]),
                                     ('bhqd,bhkd->bhqk', [(2, 2, 3, 4), (2, 2, 5, 4)]),
                                     ('...ij,...jk->...ik', [(2, 1, 3, 4), (5, 4, 2)]),
                                     ('ij,jk,kl->il', [(2, 3), (3, 4), (4, 2)]), ('ij,jk', [(2, 3), (3, 2)]),
                                     ('iij,jk,k->i', [(2, 2, 3), (3, 4), (4,)]))):
    name = 'einsum_%d' % i
    seed_for(name)
    case(name, 'einsum:' + spec, [rnd(sh) for sh in shapes], lambda *xs, s=spec: torch.einsum(s, *xs))

# --------------------------------------------------------------------------
# losses (nabla/nn.h); the target needs no gradient.
# --------------------------------------------------------------------------

F = torch.nn.functional
seed_for('mse_loss')
case('mse_loss', 'mse_loss', [rnd((3, 4)), rnd((3, 4))], F.mse_loss, rg=[True, False])
seed_for('l1_loss')
case('l1_loss', 'l1_loss', [rnd((3, 4)), rnd((3, 4))], F.l1_loss, rg=[True, False])
seed_for('bce_loss')
case('bce_loss', 'bce_loss', [rnd((3, 4), 0.05, 0.95), rnd((3, 4), 0.0, 1.0)], F.binary_cross_entropy,
     rg=[True, False])
case('bce_loss_edges', 'bce_loss', [T([0.0, 1.0, 0.5, 1e-30]), T([1.0, 0.0, 1.0, 1.0])],
     F.binary_cross_entropy, rg=[False, False])
seed_for('bce_logits')
case('bce_logits', 'bce_with_logits_loss', [rnd((3, 4), -30, 30), rnd((3, 4), 0.0, 1.0)],
     F.binary_cross_entropy_with_logits, rg=[True, False])
seed_for('hinge_loss')
case('hinge_loss', 'hinge_loss', [rnd((2, 5)), T([[1.0, -1, 1, 1, -1], [-1, -1, 1, -1, 1]])],
     lambda s, y: torch.clamp(1 - y * s, min=0).mean(), rg=[True, False])


def main():
    write('reference values', 'tools/gen_reference.py', 'tests/data/reference.txt', [text for _, text in CASES])


if __name__ == '__main__':
    main()
