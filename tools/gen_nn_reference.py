"""Reference trajectories of torch.optim for nabla's optimizers (tests/test_nn.c).

Run with Debian's PyTorch:
    /usr/bin/python3 tools/gen_nn_reference.py > tests/data/nn_reference.txt

Format, one optimizer per block, whitespace-separated numbers:
    opt KIND lr momentum weight_decay nesterov beta1 beta2 eps
    init  p0 .. p5            (a (2,3) float64 parameter)
    step  g0 .. g5  q0 .. q5  (the gradient given, then the parameter after the step), 4 times
    end
"""
import torch

torch.manual_seed(1234)
DT = torch.float64
CONFIGS = [
    ('sgd', 0.1, 0.0, 0.0, 0, 0.9, 0.999, 1e-8),
    ('sgd', 0.05, 0.9, 0.0, 0, 0.9, 0.999, 1e-8),
    ('sgd', 0.05, 0.9, 0.01, 1, 0.9, 0.999, 1e-8),
    ('adam', 0.01, 0.0, 0.0, 0, 0.9, 0.999, 1e-8),
    ('adam', 0.02, 0.0, 0.05, 0, 0.8, 0.99, 1e-6),
    ('adamw', 0.01, 0.0, 0.1, 0, 0.9, 0.999, 1e-8),
]


def fmt(t):
    return ' '.join('%.17g' % v for v in t.flatten().tolist())


def main():
    print('# torch %s; regenerate with /usr/bin/python3 tools/gen_nn_reference.py' % torch.__version__)
    for kind, lr, mom, wd, nest, b1, b2, eps in CONFIGS:
        p = torch.randn(2, 3, dtype=DT, requires_grad=True)
        if kind == 'sgd':
            opt = torch.optim.SGD([p], lr=lr, momentum=mom, weight_decay=wd, nesterov=bool(nest))
        elif kind == 'adam':
            opt = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        else:
            opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        print('opt %s %r %r %r %d %r %r %r' % (kind, lr, mom, wd, nest, b1, b2, eps))
        print('init ' + fmt(p.detach()))
        for _ in range(4):
            g = torch.randn(2, 3, dtype=DT)
            p.grad = g.clone()
            opt.step()
            print('step ' + fmt(g) + ' ' + fmt(p.detach()))
        print('end')


if __name__ == '__main__':
    main()
