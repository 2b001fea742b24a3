"""Reference data for tests/test_gpt.c: a tiny GPT-2 in PyTorch, its weights and expected results.

    python3 tools/gen_gpt_reference.py tests/data

writes gpt_tiny_f64.safetensors and gpt_tiny_f32.safetensors. Each file is laid out as a published GPT-2
model.safetensors (Hugging Face GPT2Model names, no "transformer." prefix; Conv1D weights (in, out)):

    wte.weight, wpe.weight, h.<i>.{ln_1,ln_2}.{weight,bias}, h.<i>.attn.{c_attn,c_proj}.{weight,bias},
    h.<i>.mlp.{c_fc,c_proj}.{weight,bias}, ln_f.{weight,bias}

plus the tensors such a file holds that the model does not use: h.<i>.attn.bias (the causal mask, F32 in the
f64 file and BOOL in the f32 one), h.<i>.attn.masked_bias (F32) and lm_head.weight (equal to wte.weight).
The expected results sit in the same file under names the model does not have:

    expected.tokens   (B, T) i64 inputs, expected.targets (B*T) i64
    expected.logits   (B, T, vocab), the model's output
    expected.loss     (1), mean cross-entropy of the logits against the targets
    expected.grad.<name> (3) f64: the sum, the sum of absolute values and the L2 norm of that parameter's gradient
    expected.losses   (20): the loss after each of 20 AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
                      decay 0.1 on the c_attn, c_proj and c_fc weights only; none on biases, layer norms, wte, wpe:
                      GPT-2's grouping, nb_gpt_adamw)
    expected.wte_sum  (1): the sum of wte.weight after the 20 steps

The model: vocab 61, ctx 16, layers 2, heads 2, dim 24, no dropout; GPT-2 initialisation (normal(0, 0.02),
residual projections scaled by 1/sqrt(2 layers), zero biases, layer norms 1/0) from torch.manual_seed(1234),
then every bias and layer norm perturbed (normal(0, 0.05)) so that they are not trivial. Tokens from seed 7.
"""
import json
import math
import struct
import sys

import torch

VOCAB, CTX, LAYERS, HEADS, DIM = 61, 16, 2, 2, 24
B, T = 3, 11
STEPS = 20


def make_params(dt):
    g = torch.Generator().manual_seed(1234)
    p = {}

    def normal(shape, sd):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * sd).to(dt)

    p['wte.weight'] = normal((VOCAB, DIM), 0.02)
    p['wpe.weight'] = normal((CTX, DIM), 0.02)
    sdr = 0.02 / math.sqrt(2 * LAYERS)
    for i in range(LAYERS):
        h = 'h.%d.' % i
        p[h + 'ln_1.weight'] = 1 + normal((DIM,), 0.05)
        p[h + 'ln_1.bias'] = normal((DIM,), 0.05)
        p[h + 'attn.c_attn.weight'] = normal((DIM, 3 * DIM), 0.02)
        p[h + 'attn.c_attn.bias'] = normal((3 * DIM,), 0.05)
        p[h + 'attn.c_proj.weight'] = normal((DIM, DIM), sdr)
        p[h + 'attn.c_proj.bias'] = normal((DIM,), 0.05)
        p[h + 'ln_2.weight'] = 1 + normal((DIM,), 0.05)
        p[h + 'ln_2.bias'] = normal((DIM,), 0.05)
        p[h + 'mlp.c_fc.weight'] = normal((DIM, 4 * DIM), 0.02)
        p[h + 'mlp.c_fc.bias'] = normal((4 * DIM,), 0.05)
        p[h + 'mlp.c_proj.weight'] = normal((4 * DIM, DIM), sdr)
        p[h + 'mlp.c_proj.bias'] = normal((DIM,), 0.05)
    p['ln_f.weight'] = 1 + normal((DIM,), 0.05)
    p['ln_f.bias'] = normal((DIM,), 0.05)
    return p


def forward(p, tokens):
    b, t = tokens.shape
    x = p['wte.weight'][tokens] + p['wpe.weight'][:t]
    hs = DIM // HEADS
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(LAYERS):
        h = 'h.%d.' % i
        a = torch.nn.functional.layer_norm(x, (DIM,), p[h + 'ln_1.weight'], p[h + 'ln_1.bias'], 1e-5)
        qkv = a @ p[h + 'attn.c_attn.weight'] + p[h + 'attn.c_attn.bias']
        q, k, v = qkv.split(DIM, dim=2)
        q, k, v = (z.view(b, t, HEADS, hs).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~mask, float('-inf')).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, DIM)
        x = x + (y @ p[h + 'attn.c_proj.weight'] + p[h + 'attn.c_proj.bias'])
        a = torch.nn.functional.layer_norm(x, (DIM,), p[h + 'ln_2.weight'], p[h + 'ln_2.bias'], 1e-5)
        f = torch.nn.functional.gelu(a @ p[h + 'mlp.c_fc.weight'] + p[h + 'mlp.c_fc.bias'], approximate='tanh')
        x = x + (f @ p[h + 'mlp.c_proj.weight'] + p[h + 'mlp.c_proj.bias'])
    x = torch.nn.functional.layer_norm(x, (DIM,), p['ln_f.weight'], p['ln_f.bias'], 1e-5)
    return x @ p['wte.weight'].t()


def decays(p):
    return [n for n in p if p[n].dim() == 2 and not n.startswith(('wte.', 'wpe.'))]


def write(path, tensors):
    tags = {torch.float32: ('F32', 'f'), torch.float64: ('F64', 'd'), torch.int64: ('I64', 'q'),
            torch.bool: ('BOOL', '?')}
    header, data = {'__metadata__': {'format': 'pt'}}, b''
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        tag, code = tags[t.dtype]
        raw = struct.pack('<%d%s' % (t.numel(), code), *t.flatten().tolist())
        header[name] = {'dtype': tag, 'shape': list(t.shape), 'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, sort_keys=True, separators=(',', ':')).encode()
    text += b' ' * ((8 - len(text) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + data)


def main(folder):
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (B, T), generator=g)
    targets = torch.randint(0, VOCAB, (B * T,), generator=g)
    for dt, suffix in ((torch.float64, 'f64'), (torch.float32, 'f32')):
        p = make_params(dt)
        out = {n: v.clone() for n, v in p.items()}
        for i in range(LAYERS):
            mask = torch.tril(torch.ones(CTX, CTX)).view(1, 1, CTX, CTX)
            out['h.%d.attn.bias' % i] = mask.bool() if dt == torch.float32 else mask
            out['h.%d.attn.masked_bias' % i] = torch.tensor(-1e4)
        out['lm_head.weight'] = p['wte.weight'].clone()
        leaves = {n: v.clone().requires_grad_(True) for n, v in p.items()}
        logits = forward(leaves, tokens)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), targets)
        loss.backward()
        out['expected.tokens'] = tokens
        out['expected.targets'] = targets
        out['expected.logits'] = logits.detach()
        out['expected.loss'] = loss.detach().view(1)
        for n, v in leaves.items():
            gr = v.grad.double()
            out['expected.grad.' + n] = torch.stack([gr.sum(), gr.abs().sum(), gr.norm()])
        # 20 AdamW steps from the loaded weights, GPT-2's grouping
        leaves = {n: v.clone().requires_grad_(True) for n, v in p.items()}
        dec = decays(leaves)
        opt = torch.optim.AdamW([{'params': [leaves[n] for n in leaves if n in dec], 'weight_decay': 0.1},
                                 {'params': [leaves[n] for n in leaves if n not in dec], 'weight_decay': 0.0}],
                                lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(forward(leaves, tokens).view(-1, VOCAB), targets).backward()
            opt.step()
            with torch.no_grad():
                losses.append(torch.nn.functional.cross_entropy(forward(leaves, tokens).view(-1, VOCAB), targets))
        out['expected.losses'] = torch.stack(losses)
        out['expected.wte_sum'] = leaves['wte.weight'].detach().double().sum().view(1)
        write('%s/gpt_tiny_%s.safetensors' % (folder, suffix), out)


if __name__ == '__main__':
    main(sys.argv[1])
