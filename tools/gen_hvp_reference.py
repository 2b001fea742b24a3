#!/usr/bin/env python3
"""Generate tests/data/hvp_reference.txt: PyTorch second derivatives for every op.

Usage (from the repository root, with PyTorch installed):

    python3 tools/gen_hvp_reference.py > tests/data/hvp_reference.txt

tests/test_hvp.c reads the file (PyTorch is not needed to run the test). The
output is deterministic: each case seeds torch from a CRC32 of its name and all
arithmetic is float64 on the CPU; every input is written into the file, so the
C side never has to replicate torch's generator.

For each case, with y = op(x_0, ..., x_k-1) and constant tensors W and U of
y's shape, the scalar function is

    f = sum(W * y) + sum(U * y * y) / 2

and the file holds f's gradient g_i = df/dx_i and the Hessian-vector product

    (H v)_i = d/dx_i ( sum_j sum(g_j * v_j) )

for a direction v_j per input that requires grad, computed with
torch.autograd.grad(..., create_graph=True) twice. The quadratic term makes
every op's second derivative visible, linear ops included: for a linear op H v
is J^T diag(U) J v, which still runs the op's backward rule (and the rule of
that rule) on values that depend on x; for a nonlinear op the W term adds the
op's own second derivative.

File format (whitespace-separated tokens; '#' starts a comment line):

    cases <N>
    case <name>
    op <op>                            nabla's op without its nb_ prefix (below)
    params <n> <v1> ... <vn>           numeric parameters (meaning per op)
    inputs <k>
    input <rg> <rank> <d0> ... <dr-1>  rg: 1 when input requires grad
    <values>                           row-major, '%.17g' (exact round trip)
    ... (k input blocks)
    output <rank> <dims...>            y
    weight <rank> <dims...>            W
    quad <rank> <dims...>              U
    dir <i> <rank> <dims...>           v_i, one block per input with rg 1
    grad <i> <rank> <dims...>          g_i, one block per input with rg 1
    hvp <i> <rank> <dims...>           (H v)_i, one block per input with rg 1
    end

(each header line is followed by a line of values). Parameters follow
tools/gen_reference.py (reductions: keepdim then axes; dense: act; losses'
targets and the indices of index_select / gather as params, ...); ops of this
file only: var (correction keepdim axis), layer_norm (eps has_gamma has_beta),
dropout (p seed: nabla's splitmix64 stream, replicated here), custom_cube (a
user-defined op, y = x^3), to_f32_f64 (to f32 and back), contiguous_t
(contiguous of the transpose). "t0:<op>" is <op> applied to the transpose of
input 0 (a non-contiguous view of the 2-D leaf stored in the file).
"""

import zlib

import torch
import torch.nn.functional as F

from refformat import ce_ex, ce_ex_cases, layer_cases, keep_mask, sdpa, T, block, case_head, leaves_for, rnd, rnd_away, seed_for, write

torch.set_default_dtype(torch.float64)

CASES = []
NAMES = set()


def dyadic(shape, lo=-2.0, hi=2.0):
    """Multiples of 1/8: every product below is exact, in f32 as in f64."""
    return torch.round(rnd(shape, lo, hi) * 8) / 8


def case(name, op, inputs, fn, params=(), rg=None, exact=False):
    """inputs: float64 tensors (drawn after seed_for(name)); fn(*leaves) -> y."""
    if name in NAMES:
        raise SystemExit('duplicate case name ' + name)
    NAMES.add(name)
    leaves, rg = leaves_for(inputs, rg)
    y = fn(*leaves)
    # W, U and the directions come from a stream of their own, so that they do
    # not depend on how many numbers drawing the inputs took.
    torch.manual_seed(zlib.crc32(('WUV:' + name).encode()) & 0x7FFFFFFF)
    draw = dyadic if exact else rnd
    W = draw(tuple(y.shape), -1.0, 1.0)
    U = draw(tuple(y.shape), -1.0, 1.0)
    diff = [l for l, r in zip(leaves, rg) if r]
    V = [draw(tuple(l.shape), -1.0, 1.0) for l in diff]
    f = (W * y).sum() + (U * y * y).sum() / 2
    if f.requires_grad:
        gs = torch.autograd.grad(f, diff, create_graph=True, allow_unused=True)
    else:
        gs = [None] * len(diff)
    gs = [torch.zeros_like(l) if g is None else g for l, g in zip(diff, gs)]
    s = sum((g * v).sum() for g, v in zip(gs, V))
    if s.requires_grad:
        hs = torch.autograd.grad(s, diff, create_graph=True, allow_unused=True)
    else:
        hs = [None] * len(diff)
    hs = [torch.zeros_like(l) if h is None else h for l, h in zip(diff, hs)]
    for t in [y] + list(gs) + list(hs):
        if not torch.isfinite(t).all():
            raise SystemExit('non-finite value in case ' + name)
    lines = case_head(name, op, params, leaves, rg) + block('output', y) + block('weight', W) + block('quad', U)
    idx = [i for i, r in enumerate(rg) if r]
    for i, v in zip(idx, V):
        lines += block('dir %d' % i, v)
    for i, g in zip(idx, gs):
        lines += block('grad %d' % i, g)
    for i, h in zip(idx, hs):
        lines += block('hvp %d' % i, h)
    lines.append('end')
    CASES.append('\n'.join(lines))


def seeded(name, op, gens, fn, **kw):
    """A case whose inputs are drawn by the callables gens after seeding from name."""
    seed_for(name)
    case(name, op, [g() for g in gens], fn, **kw)


# --------------------------------------------------------------------------
# Elementwise binary ops, broadcasting in each operand position.
# --------------------------------------------------------------------------

BCAST = [
    ('same', (2, 3), (2, 3)),
    ('row', (2, 3), (3,)),
    ('col_row', (2, 1), (1, 3)),
    ('scalar_b', (2, 3), ()),
    ('scalar_a', (), (2, 3)),
    ('3d', (4, 1, 3), (2, 3)),
]
BINARY = {
    'add': (torch.add, rnd, rnd),
    'sub': (torch.sub, rnd, rnd),
    'mul': (torch.mul, rnd, rnd),
    'div': (torch.div, rnd, rnd_away),
    'pow_t': (torch.pow, lambda s: rnd(s, 0.5, 2.0), lambda s: rnd(s, -2.0, 2.5)),
}
for op, (fn, ga, gb) in BINARY.items():
    for tag, sa, sb in BCAST:
        seeded('%s_%s' % (op, tag), op, [lambda: ga(sa), lambda: gb(sb)], fn)
seeded('mul_nograd_b', 'mul', [lambda: rnd((3, 2)), lambda: rnd((2,))], torch.mul, rg=[True, False])
seeded('div_nograd_a', 'div', [lambda: rnd((2, 1)), lambda: rnd_away((2, 4))], torch.div, rg=[False, True])


def where_fn(c, a, b):
    return torch.where(c != 0, a, b)


seeded('where_same', 'where', [lambda: T([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), lambda: rnd((2, 3)),
                               lambda: rnd((2, 3))], where_fn, rg=[False, True, True])
seeded('where_bcast', 'where', [lambda: T([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]), lambda: rnd((4, 3)),
                                lambda: rnd((4, 1))], where_fn, rg=[False, True, True])

# --------------------------------------------------------------------------
# Elementwise with a constant, and unary.
# --------------------------------------------------------------------------

seeded('neg', 'neg', [lambda: rnd((2, 3))], torch.neg)
seeded('scale', 'scale', [lambda: rnd((3, 2))], lambda x: x * 2.5, params=[2.5])
seeded('add_scalar', 'add_scalar', [lambda: rnd((2, 2, 2))], lambda x: x + 1.5, params=[1.5])
for tag, p, gen in (('2', 2.0, lambda: rnd((2, 3))), ('3', 3.0, lambda: rnd((2, 3))),
                    ('0p5', 0.5, lambda: rnd((2, 3), 0.2, 3.0)), ('neg1', -1.0, lambda: rnd_away((2, 3))),
                    ('neg2', -2.0, lambda: rnd_away((2, 3))), ('1p5', 1.5, lambda: rnd((2, 3), 0.1, 3.0)),
                    ('neg0p5', -0.5, lambda: rnd((2, 3), 0.2, 3.0)), ('0', 0.0, lambda: rnd((2, 3)))):
    seeded('pow_' + tag, 'pow', [gen], lambda x, p=p: torch.pow(x, p), params=[p])

UNARY = [
    ('exp', torch.exp, lambda: rnd((2, 3), -2.0, 2.0)),
    ('log', torch.log, lambda: rnd((2, 3), 0.2, 5.0)),
    ('sqrt', torch.sqrt, lambda: rnd((3, 2), 0.2, 5.0)),
    ('abs', torch.abs, lambda: rnd_away((2, 3), 0.1, 2.0)),
    ('sin', torch.sin, lambda: rnd((2, 3), -4.0, 4.0)),
    ('cos', torch.cos, lambda: rnd((2, 3), -4.0, 4.0)),
    ('tanh', torch.tanh, lambda: rnd((2, 3), -3.0, 3.0)),
    ('sigmoid', torch.sigmoid, lambda: rnd((2, 3), -4.0, 4.0)),
    ('relu', torch.relu, lambda: rnd_away((2, 3), 0.1, 2.0)),
    ('gelu', lambda x: F.gelu(x, approximate='none'), lambda: rnd((2, 4), -3.0, 3.0)),
    ('erf', torch.erf, lambda: rnd((2, 3), -2.5, 2.5)),
    ('log1p', torch.log1p, lambda: rnd((3, 4), -0.8, 2.0)),
    ('expm1', torch.expm1, lambda: rnd((3, 4))),
    ('sign', torch.sign, lambda: T([[-1.5, 0.0, 2.25], [0.5, -0.125, 0.0]])),
]
for name, fn, gen in UNARY:
    seeded(name, name, [gen], fn)
seeded('softplus', 'softplus', [lambda: T([[-30.0, -1.0, 0.0, 0.5], [3.0, 19.0, 21.0, 40.0]])], F.softplus)
seeded('softplus_rand', 'softplus', [lambda: rnd((3, 3), -5.0, 5.0)], F.softplus)
for tag, alpha in (('0p01', 0.01), ('0p2', 0.2)):
    seeded('leaky_relu_' + tag, 'leaky_relu', [lambda: rnd_away((2, 4), 0.1, 2.0)],
           lambda x, a=alpha: F.leaky_relu(x, negative_slope=a), params=[alpha])
# Transformer ops: gelu_tanh, tril / triu (params k), masked_fill (x, a 0/1 mask
# without grad; params value).
seeded('gelu_tanh', 'gelu_tanh', [lambda: rnd((3, 4), -4.0, 4.0)], lambda x: F.gelu(x, approximate='tanh'))
seeded('gelu_tanh_tails', 'gelu_tanh', [lambda: T([-9.0, -5.0, -2.0, 0.0, 2.0, 5.0, 9.0])],
       lambda x: F.gelu(x, approximate='tanh'))
seeded('tril_1', 'tril', [lambda: rnd((2, 3, 4))], lambda x: torch.tril(x, 1), params=[1])
seeded('triu_neg1', 'triu', [lambda: rnd((4, 3))], lambda x: torch.triu(x, -1), params=[-1])
seeded('masked_fill', 'masked_fill', [lambda: rnd((3, 4)), lambda: T([[1.0, 0.0, 0.0, 1.0]])],
       lambda x, m: x.masked_fill(m != 0, -3.0), params=[-3.0], rg=[True, False])
# Kinks and thresholds: the subgradient conventions (relu'(0) = 0, |x|'(0) = 0,
# leaky_relu'(0) = alpha, clamp passing its bounds, softplus linear above 20).
KINK = T([[-1.5, 0.0, 2.25], [0.5, -0.125, 0.0]])
seeded('relu_kink', 'relu', [lambda: KINK], torch.relu)
seeded('abs_kink', 'abs', [lambda: KINK], torch.abs)
seeded('leaky_relu_kink', 'leaky_relu', [lambda: KINK], lambda x: F.leaky_relu(x, 0.2), params=[0.2])
seeded('clamp_bounds', 'clamp', [lambda: T([[-0.5, 0.7, 0.1], [-2.0, 2.0, 0.7]])],
       lambda x: torch.clamp(x, -0.5, 0.7), params=[-0.5, 0.7])
# Not at 20 itself: PyTorch's first derivative there is sigmoid(20) (x > 20 is linear)
# but its double backward takes x < 20 as the curved part, giving 0.
seeded('softplus_threshold', 'softplus', [lambda: T([19.5, 19.999, 20.001, 20.5])], F.softplus)
seeded('pow_2_zero', 'pow', [lambda: KINK], lambda x: torch.pow(x, 2.0), params=[2.0])
seeded('pow_3_zero', 'pow', [lambda: KINK], lambda x: torch.pow(x, 3.0), params=[3.0])
seeded('maximum', 'maximum', [lambda: rnd((3, 4)), lambda: rnd((4,))], torch.maximum)
seeded('maximum_ties', 'maximum', [lambda: T([1.0, 2.0, 3.0]), lambda: T([1.0, 0.0, 3.0])], torch.maximum)
seeded('minimum', 'minimum', [lambda: rnd((2, 1)), lambda: rnd((1, 3))], torch.minimum)
seeded('clamp', 'clamp', [lambda: rnd((3, 4))], lambda x: torch.clamp(x, -0.5, 0.7), params=[-0.5, 0.7])

# --------------------------------------------------------------------------
# Conversion and copies.
# --------------------------------------------------------------------------

seeded('to_f32_f64', 'to_f32_f64', [lambda: dyadic((2, 3))], lambda x: x.to(torch.float32).to(torch.float64),
       exact=True)
seeded('clone', 'clone', [lambda: rnd((2, 3, 2))], torch.clone)
seeded('contiguous_t', 'contiguous_t', [lambda: rnd((3, 2))], lambda x: x.t().contiguous())

# --------------------------------------------------------------------------
# Reductions.
# --------------------------------------------------------------------------

seeded('sum', 'sum', [lambda: rnd((2, 3))], torch.sum)
seeded('mean', 'mean', [lambda: rnd((2, 3, 2))], torch.mean)
for op, fn in (('sum_axes', torch.sum), ('mean_axes', torch.mean), ('max_axes', torch.amax)):
    for tag, shape, axes, keep in (('ax1_keep', (2, 3, 4), [1], True), ('ax02', (2, 3, 4), [0, 2], False),
                                   ('all', (2, 3), [], False)):
        dims = axes if axes else list(range(len(shape)))
        seeded('%s_%s' % (op, tag), op, [lambda: rnd(shape)], lambda x, d=dims, k=keep, fn=fn: fn(x, d, keepdim=k),
               params=[1 if keep else 0] + axes)
TIES = T([[3.0, 1.0, 3.0, 2.0], [0.0, 0.0, -1.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
seeded('max_axes_ties', 'max_axes', [lambda: TIES], lambda x: torch.amax(x, 1), params=[0, 1])
seeded('logsumexp', 'logsumexp', [lambda: rnd((3, 4), -3, 3)], lambda x: torch.logsumexp(x, 1), params=[1])
for tag, corr, keep, axis in (('c1_keep', 1, 1, 0), ('c0', 0, 0, 1)):
    seeded('var_' + tag, 'var', [lambda: rnd((3, 4))],
           lambda x, c=corr, k=keep, a=axis: torch.var(x, a, correction=c, keepdim=bool(k)),
           params=[corr, keep, axis])
seeded('norm', 'norm', [lambda: rnd((3, 4))], lambda x: torch.linalg.vector_norm(x))

# --------------------------------------------------------------------------
# Shape ops.
# --------------------------------------------------------------------------

seeded('reshape', 'reshape', [lambda: rnd((2, 3, 4))], lambda x: x.reshape(6, -1), params=[6, -1])
seeded('transpose', 'transpose', [lambda: rnd((2, 3, 4))], lambda x: x.transpose(0, 2), params=[0, 2])
seeded('permute', 'permute', [lambda: rnd((2, 3, 4))], lambda x: x.permute(2, 0, 1), params=[2, 0, 1])


def py_slice(x, axis, start, stop):
    idx = [slice(None)] * x.dim()
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]


seeded('slice_ax1', 'slice', [lambda: rnd((2, 5, 3))], lambda x: py_slice(x, 1, 1, 4), params=[1, 1, 4])
seeded('slice_neg', 'slice', [lambda: rnd((6, 2))], lambda x: py_slice(x, 0, -4, -1), params=[0, -4, -1])
seeded('expand', 'expand', [lambda: rnd((3, 1))], lambda x: x.expand(2, 3, 4), params=[2, 3, 4])
seeded('concat2', 'concat', [lambda: rnd((2, 3, 2)), lambda: rnd((2, 1, 2))], lambda a, b: torch.cat([a, b], 1),
       params=[1])
seeded('concat3', 'concat', [lambda: rnd((2,)), lambda: rnd((1,)), lambda: rnd((3,))],
       lambda *xs: torch.cat(xs, 0), params=[0])
seeded('flip', 'flip', [lambda: rnd((3, 4))], lambda x: torch.flip(x, [1]), params=[1])
seeded('stack', 'stack', [lambda: rnd((2, 3)), lambda: rnd((2, 3))], lambda a, b: torch.stack([a, b], 1),
       params=[1])
seeded('unsqueeze', 'unsqueeze', [lambda: rnd((2, 3))], lambda x: x.unsqueeze(-1), params=[-1])
seeded('squeeze', 'squeeze', [lambda: rnd((2, 1, 3))], lambda x: x.squeeze(1), params=[1])
seeded('split_second', 'split_second', [lambda: rnd((2, 5))], lambda x: torch.split(x, [2, 3], 1)[1],
       params=[1, 2, 3])

# --------------------------------------------------------------------------
# matmul and dense (act: 0 none, 1 relu, 2 tanh, 3 sigmoid).
# --------------------------------------------------------------------------

for name, sa, sb in (('matmul_2d', (3, 4), (4, 2)), ('matmul_mv', (3, 4), (4,)), ('matmul_vm', (4,), (4, 2)),
                     ('matmul_vv', (4,), (4,)), ('matmul_3d', (2, 3, 4), (2, 4, 2)),
                     ('matmul_bcast', (1, 3, 4), (2, 4, 2)), ('matmul_4d_3d', (2, 1, 3, 4), (3, 4, 2))):
    seeded(name, 'matmul', [lambda: rnd(sa), lambda: rnd(sb)], torch.matmul)

ACTS = (lambda y: y, torch.relu, torch.tanh, torch.sigmoid)
for name, sx, bias, act in (('dense_none', (3, 4), True, 0), ('dense_relu', (3, 4), True, 1),
                            ('dense_relu_nobias', (3, 4), False, 1), ('dense_tanh_3d', (2, 3, 4), True, 2),
                            ('dense_sigmoid', (3, 4), True, 3), ('dense_sigmoid_nobias', (3, 4), False, 3),
                            ('dense_tanh_vector', (4,), True, 2)):
    gens = [lambda: rnd(sx), lambda: rnd((5, 4))] + ([lambda: rnd((5,))] if bias else [])
    seeded(name, 'dense', gens, lambda x, w, b=None, a=act: ACTS[a](F.linear(x, w, b)), params=[act])

# --------------------------------------------------------------------------
# softmax family and classification losses (targets travel as params).
# --------------------------------------------------------------------------

for name, shape, axis in (('softmax_last', (3, 5), -1), ('softmax_axis0', (4, 3), 0),
                          ('softmax_mid', (2, 3, 4), 1)):
    seeded(name, 'softmax', [lambda: rnd(shape, -3, 3)], lambda x, a=axis: torch.softmax(x, a), params=[axis])
    seeded('log_' + name, 'log_softmax', [lambda: rnd(shape, -3, 3)], lambda x, a=axis: torch.log_softmax(x, a),
           params=[axis])
for name, n, c in (('cross_entropy_4x3', 4, 3), ('cross_entropy_5x6', 5, 6)):
    seed_for(name + ':targets')
    targets = [int(v) for v in torch.randint(0, c, (n,))]
    seeded(name, 'cross_entropy', [lambda: rnd((n, c), -3, 3)],
           lambda x, t=targets: F.cross_entropy(x, torch.tensor(t)), params=targets)
    seeded('nll_' + name, 'nll_loss', [lambda: torch.log_softmax(rnd((n, c), -3, 3), 1)],
           lambda x, t=targets: F.nll_loss(x, torch.tensor(t)), params=targets)

# nb_cross_entropy_ex (refformat.CE_EX_CASES): params reduction ignore_index label_smoothing, then the targets.
for name, shape, red, ign, eps, t, flat in ce_ex_cases():
    seeded(name, 'cross_entropy_ex', [lambda s=shape: rnd(s, -3, 3)],
         lambda x, t=t, r=red, g=ign, e=eps: ce_ex(x, t, r, g, e), params=[red, ign, eps] + flat)

# --------------------------------------------------------------------------
# layer norm over the last axis (params: eps has_gamma has_beta).
# --------------------------------------------------------------------------

for name, shape, hg, hb in (('layer_norm_2d', (3, 5), 1, 1), ('layer_norm_3d', (2, 3, 4), 1, 1),
                            ('layer_norm_plain', (3, 4), 0, 0), ('layer_norm_gamma', (2, 5), 1, 0),
                            ('layer_norm_beta', (2, 5), 0, 1)):
    d = shape[-1]
    gens = [lambda: rnd(shape)] + ([lambda: rnd_away((d,))] if hg else []) + ([lambda: rnd((d,))] if hb else [])

    def ln(x, *gb, d=d, hg=hg, hb=hb):
        gamma = gb[0] if hg else None
        beta = gb[-1] if hb else None
        if hb and not hg:
            # PyTorch 1.13's double backward of F.layer_norm fails with a beta and no gamma:
            # the same function from its parts.
            mu = x.mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) + beta
        return F.layer_norm(x, (d,), gamma, beta, 1e-5)

    seeded(name, 'layer_norm', gens, ln, params=[1e-5, hg, hb])

# --------------------------------------------------------------------------
# inverse, det, logdet (well conditioned: uniform + 3 I).
# --------------------------------------------------------------------------

for name, shape in (('inverse_3x3', (3, 3)), ('inverse_batched', (2, 3, 3))):
    for op, fn in (('inverse', torch.inverse), ('det', torch.det), ('logdet', torch.logdet)):
        seeded(name.replace('inverse', op), op, [lambda: rnd(shape, -1, 1) + 3 * torch.eye(shape[-1])], fn)

# --------------------------------------------------------------------------
# indexing, cumsum, pad (params: axis then indices; pad: value then pads per axis).
# --------------------------------------------------------------------------

seeded('index_select', 'index_select', [lambda: rnd((3, 4))],
       lambda x: torch.index_select(x, 0, torch.tensor([2, 0, 2, 1])), params=[0, 2, 0, 2, 1])
seeded('index_select_1', 'index_select', [lambda: rnd((2, 3, 2))],
       lambda x: torch.index_select(x, 1, torch.tensor([1, 1])), params=[1, 1, 1])
GI = [[1, 0, 2], [2, 2, 0]]
seeded('gather', 'gather', [lambda: rnd((2, 3))], lambda x: torch.gather(x, 1, torch.tensor(GI)),
       params=[1] + [v for r in GI for v in r])
seeded('cumsum', 'cumsum', [lambda: rnd((3, 4))], lambda x: torch.cumsum(x, 1), params=[1])
seeded('cumsum_0', 'cumsum', [lambda: rnd((3, 2, 2))], lambda x: torch.cumsum(x, 0), params=[0])
# nabla's pads run from the first axis; torch's F.pad from the last.
seeded('pad', 'pad', [lambda: rnd((2, 3))], lambda x: F.pad(x, (2, 1, 1, 0), value=0.5), params=[0.5, 1, 0, 2, 1])

# --------------------------------------------------------------------------
# einsum: the spec travels in the op name, "einsum:<spec>".
# --------------------------------------------------------------------------

for i, (spec, shapes) in enumerate((('ij,jk->ik', [(3, 4), (4, 2)]), ('ii->', [(3, 3)]), ('ii->i', [(3, 3)]),
                                     ('ij->ji', [(2, 3)]), ('i,j->ij', [(3,), (2,)]), ('i,i->', [(4,), (4,)]),
                                     ('bij,bjk->bik', [(2, 3, 4), (2, 4, 2)]),
                                     ('...ij,...jk->...ik', [(2, 1, 3, 4), (3, 4, 2)]),
                                     ('ij,jk,kl->il', [(2, 3), (3, 4), (4, 2)]),
                                     ('iij,jk,k->i', [(2, 2, 3), (3, 4), (4,)]))):
    seeded('einsum_%d' % i, 'einsum:' + spec, [lambda sh=sh: rnd(sh) for sh in shapes],
           lambda *xs, s=spec: torch.einsum(s, *xs))

# --------------------------------------------------------------------------
# losses (nabla/nn.h).
# --------------------------------------------------------------------------

seeded('mse_loss', 'mse_loss', [lambda: rnd((3, 4)), lambda: rnd((3, 4))], F.mse_loss)
seeded('l1_loss', 'l1_loss', [lambda: rnd((3, 4)), lambda: rnd((3, 4))], F.l1_loss)
seeded('bce_loss', 'bce_loss', [lambda: rnd((3, 4), 0.05, 0.95), lambda: rnd((3, 4), 0.0, 1.0)],
       F.binary_cross_entropy, rg=[True, False])
seeded('bce_logits', 'bce_with_logits_loss', [lambda: rnd((3, 4), -6, 6), lambda: rnd((3, 4), 0.0, 1.0)],
       F.binary_cross_entropy_with_logits, rg=[True, False])
seeded('hinge_loss', 'hinge_loss', [lambda: rnd((2, 5)), lambda: T([[1.0, -1, 1, 1, -1], [-1, -1, 1, -1, 1]])],
       lambda s, y: torch.clamp(1 - y * s, min=0).mean(), rg=[True, False])

# --------------------------------------------------------------------------
# dropout (nabla's generator replicated), and a user-defined op.
# --------------------------------------------------------------------------

M64 = (1 << 64) - 1



# --------------------------------------------------------------------------
# scaled dot-product attention (params: causal scale mask_kind; mask_kind 0
# none, 1 an additive float mask (input 3), 2 a keep/drop mask given as 0/1
# values (input 3, no grad) that nabla takes as i64). torch 1.13 has no
# F.scaled_dot_product_attention: its math path, written out.
# --------------------------------------------------------------------------



seeded('attention_plain', 'attention', [lambda: rnd((2, 3, 4)), lambda: rnd((2, 5, 4)), lambda: rnd((2, 5, 3))],
       lambda q, k, v: sdpa(q, k, v), params=[0, 0, 0])
seeded('attention_causal_mask', 'attention',
       [lambda: rnd((2, 3, 4)), lambda: rnd((1, 5, 4)), lambda: rnd((5, 2)), lambda: rnd((3, 5))],
       lambda q, k, v, m: sdpa(q, k, v, m, causal=True, scale=0.4, kind=1), params=[1, 0.4, 1])


def splitmix_uniform(state, n):
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out.append((z >> 11) * (1.0 / 9007199254740992.0))
    return out


def dropout_fn(x, p, seed):
    u = T(splitmix_uniform(seed, x.numel())).reshape(x.shape)
    mask = torch.where(u < p, 0.0, 1.0 / (1.0 - p))
    return x * mask


seeded('dropout', 'dropout', [lambda: rnd((3, 4))], lambda x: dropout_fn(x, 0.4, 1234), params=[0.4, 1234])
seeded('custom_cube', 'custom_cube', [lambda: rnd((2, 3))], lambda x: x * x * x)



# --------------------------------------------------------------------------
# layers: 2-D convolution and its gradient ops, pooling, batch norm (their
# parameters: tools/refformat.py, CONV_CASES, POOL_CASES, BATCH_NORM_CASES).
# --------------------------------------------------------------------------

for name, op, inputs, fn, params, rg in layer_cases():
    case(name, op, inputs, fn, params=params, rg=rg)

# --------------------------------------------------------------------------
# Non-contiguous operands: op "t0:<op>" runs <op> on the transpose of input 0
# (a 2-D leaf, stored as drawn), so the rules meet strided values.
# --------------------------------------------------------------------------


def transposed(name, op, gens, fn, **kw):
    seeded(name, 't0:' + op, gens, lambda x, *rest: fn(x.t(), *rest), **kw)


transposed('t0_sigmoid', 'sigmoid', [lambda: rnd((4, 3), -4, 4)], torch.sigmoid)
transposed('t0_tanh', 'tanh', [lambda: rnd((4, 3), -3, 3)], torch.tanh)
transposed('t0_relu', 'relu', [lambda: rnd_away((4, 3), 0.1, 2.0)], torch.relu)
transposed('t0_mul', 'mul', [lambda: rnd((4, 3)), lambda: rnd((4,))], torch.mul)
transposed('t0_pow', 'pow', [lambda: rnd((4, 3), 0.2, 2.0)], lambda x: torch.pow(x, 2.5), params=[2.5])
transposed('t0_sum_axes', 'sum_axes', [lambda: rnd((4, 3))], lambda x: x.sum(1), params=[0, 1])
transposed('t0_max_axes', 'max_axes', [lambda: rnd((4, 3))], lambda x: torch.amax(x, 0, keepdim=True),
           params=[1, 0])
transposed('t0_matmul', 'matmul', [lambda: rnd((4, 3)), lambda: rnd((4, 2))], torch.matmul)
for act in (1, 2, 3):
    transposed('t0_dense_%d' % act, 'dense', [lambda: rnd((4, 3)), lambda: rnd((5, 4)), lambda: rnd((5,))],
               lambda x, w, b, a=act: ACTS[a](F.linear(x, w, b)), params=[act])
transposed('t0_softmax', 'softmax', [lambda: rnd((5, 3), -3, 3)], lambda x: torch.softmax(x, 1), params=[1])
transposed('t0_log_softmax', 'log_softmax', [lambda: rnd((5, 3), -3, 3)], lambda x: torch.log_softmax(x, 0),
           params=[0])
transposed('t0_cross_entropy', 'cross_entropy', [lambda: rnd((4, 3), -3, 3)],
           lambda x: F.cross_entropy(x, torch.tensor([1, 3, 0])), params=[1, 3, 0])
transposed('t0_layer_norm', 'layer_norm', [lambda: rnd((5, 3)), lambda: rnd_away((5,)), lambda: rnd((5,))],
           lambda x, g, b: F.layer_norm(x, (5,), g, b, 1e-5), params=[1e-5, 1, 1])
transposed('t0_inverse', 'inverse', [lambda: rnd((3, 3), -1, 1) + 3 * torch.eye(3)], torch.inverse)
transposed('t0_index_select', 'index_select', [lambda: rnd((4, 3))],
           lambda x: torch.index_select(x, 1, torch.tensor([3, 0, 3])), params=[1, 3, 0, 3])
transposed('t0_cumsum', 'cumsum', [lambda: rnd((4, 3))], lambda x: torch.cumsum(x, 1), params=[1])
transposed('t0_softplus', 'softplus', [lambda: rnd((4, 3), -4, 4)], F.softplus)


def main():
    write('second-derivative reference values', 'tools/gen_hvp_reference.py', 'tests/data/hvp_reference.txt', CASES)


if __name__ == '__main__':
    main()
