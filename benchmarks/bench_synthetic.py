"""Benchmark of the synthetic radiographs (fracture_course.synthetic): generation speed and learnability.

    python benchmarks/bench_synthetic.py                 # everything (about 1-3 minutes on a laptop CPU)
    python benchmarks/bench_synthetic.py --speed-only    # generation speed alone (seconds)
    python benchmarks/bench_synthetic.py --epochs 20 --train-seeds 0 1 2

Bars (from the course plan):
  - generation >= 500 images/s at 128x128 on one CPU core;
  - on the quick profile's dataset (4,000 images, 64 px, seed 42): logistic regression on raw pixels <= 70% test
    accuracy, a small CNN trained for a minute or two on the CPU >= 85%;
  - fracture positions vary (generator v3): the share of fracture boxes containing the image centre, the pointing
    game's 'always the centre' baseline.

Everything runs on one thread (numpy, torch), so figures are per CPU core. Rates are given both as wall-clock
and as CPU-time rates: on a shared machine the CPU-time rate is the one that says what one free core would do.
"""
import os
for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(_v, '1')
import argparse, math, platform, tempfile, time
from pathlib import Path

import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
from torchmetrics.functional.classification import binary_accuracy, binary_recall, binary_specificity, binary_auroc

from fracture_course.synthetic import (SynthSettings, SyntheticFractures, make_cases, render_case, write_synthetic_dataset,
                                       SPLITS, DIFFICULTIES, FRACTURE_TYPES)

torch.set_num_threads(1)


def timed(f):
    "Run f(); return (result, wall seconds, CPU seconds)"
    w, c = time.perf_counter(), time.process_time()
    r = f()
    return r, time.perf_counter() - w, time.process_time() - c


def bench_speed(sizes=(64, 128, 224), n=1000, seed=0):
    print('== Generation speed (one thread; planning + rendering to uint8 arrays) ==')
    rates = {}
    for size in sizes:
        make_cases(SynthSettings(n=20, size=size, seed=seed))            # warm caches (pixel grids, noise bank)
        st = SynthSettings(n=n if size <= 128 else n//4, size=size, seed=seed)
        _, wall, cpu = timed(lambda: [render_case(c) for c in make_cases(st)])
        rates[size] = st.n/cpu
        print(f'  {size:4d} px: {st.n/wall:7.0f} images/s wall, {st.n/cpu:7.0f} images/s CPU time  ({st.n} images)')
    with tempfile.TemporaryDirectory() as d:
        st = SynthSettings(n=500, size=128, seed=seed)
        _, wall, cpu = timed(lambda: write_synthetic_dataset(Path(d)/'ds', st, progress=False))
        print(f'  writing PNGs + manifest at 128 px: {st.n/wall:.0f} images/s wall, {st.n/cpu:.0f} images/s CPU time')
    return rates


def report(probs, y):
    return dict(accuracy=float(binary_accuracy(probs, y)), sensitivity=float(binary_recall(probs, y)),
                specificity=float(binary_specificity(probs, y)), auroc=float(binary_auroc(probs, y)))


def fit_logistic(x, y, weight_decay=1e-2, seed=0):
    "Logistic regression on standardised raw pixels (L-BFGS)"
    torch.manual_seed(seed)
    mu, sd = x.flatten(1).mean(0), x.flatten(1).std(0) + 1e-3
    xs = (x.flatten(1) - mu)/sd
    lin = nn.Linear(xs.shape[1], 2); opt = torch.optim.LBFGS(lin.parameters(), max_iter=100)
    def closure():
        opt.zero_grad(); loss = F.cross_entropy(lin(xs), y) + weight_decay*lin.weight.pow(2).sum(); loss.backward(); return loss
    opt.step(closure)
    return lambda z: lin((z.flatten(1) - mu)/sd)


class Standardize(nn.Module):
    def forward(self, x): return (x - x.mean((2, 3), keepdim=True))/(x.std((2, 3), keepdim=True) + 1e-3)


def small_cnn(width=8):
    "The chapter's small CNN: four stages of 3x3 conv-BN-ReLU (two per stage, then pooling), global average pooling"
    block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
    layers, c = [Standardize()], 1
    for k, o in enumerate([width, 2*width, 4*width, 4*width]):
        layers += block(c, o) + (block(o, o) if k < 3 else []) + ([nn.MaxPool2d(2)] if k < 3 else []); c = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2))


def train_cnn(x, y, epochs, lr=5e-3, bs=32, seed=0):
    torch.manual_seed(seed); model = small_cnn().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs*math.ceil(len(x)/bs), pct_start=0.15)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(x)).split(bs):
            xb = x[b].contiguous(memory_format=torch.channels_last)
            xb = torch.where(torch.rand(len(b), 1, 1, 1) < 0.5, xb.flip(3), xb)
            xb = torch.where(torch.rand(len(b), 1, 1, 1) < 0.5, xb.flip(2), xb)
            loss = F.cross_entropy(model(xb), y[b]); opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return model.eval()


def fmt(r): return '  '.join(f'{k} {v:.3f}' for k, v in r.items())


def bench_learning(n=4000, size=64, seed=42, epochs=20, train_seeds=(0,)):
    print(f'\n== Learnability: {n} images, {size} px, seed {seed} (the quick profile), 70/15/15 split ==')
    dsets, wall, _ = timed(lambda: {s: SyntheticFractures(n, size, seed, split=s) for s in SPLITS})
    data = {s: d.tensors() for s, d in dsets.items()}
    (xtr, ytr), (xte, yte) = data['train'], data['test']
    print(f'  train {len(ytr)} ({int(ytr.sum())} fractured), test {len(yte)} ({int(yte.sum())} fractured)')
    lin, wall, _ = timed(lambda: fit_logistic(xtr, ytr))
    with torch.no_grad(): lin_r = report(lin(xte).softmax(1)[:, 1], yte)
    print(f'  logistic regression (raw pixels, {wall:.1f} s): {fmt(lin_r)}')
    meta = [dsets['test'].meta(i) for i in range(len(dsets['test']))]
    boxes = [m['boxes'] for m in meta if m.get('boxes')]
    centre = lambda tol: np.mean([any(x0 - tol <= size/2 <= x1 + tol and y0 - tol <= size/2 <= y1 + tol for x0, y0, x1, y1 in b) for b in boxes])
    print(f'  fracture boxes containing the image centre: {centre(0):.2f} (within {size//16} px: {centre(size//16):.2f}); '
          f'box centres: std {np.std([[(x0+x1)/2, (y0+y1)/2] for b in boxes for x0, y0, x1, y1 in b], 0).round(1).tolist()} px')
    results = []
    for ts in train_seeds:
        model, wall, cpu = timed(lambda: train_cnn(xtr, ytr, epochs, seed=ts))
        with torch.no_grad(): p = model(xte.contiguous(memory_format=torch.channels_last)).softmax(1)[:, 1]
        r = report(p, yte); results.append(r)
        print(f'  small CNN, {epochs} epochs, training seed {ts} ({wall:.0f} s wall, {cpu:.0f} s CPU): {fmt(r)}')
        ok = ((p > 0.5).long() == yte).numpy()
        by = lambda key, vals: '  '.join(f'{v} {np.mean([o for o, m in zip(ok, meta) if m[key] == v]):.2f}'
                                        for v in vals if any(m[key] == v for m in meta))
        print(f'    accuracy by difficulty: {by("difficulty", DIFFICULTIES + ("none",))}')
        print(f'    accuracy by fracture type: {by("fracture_type", FRACTURE_TYPES)}')
    mean_acc = float(np.mean([r['accuracy'] for r in results]))
    return lin_r, results, mean_acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--speed-only', action='store_true', help='only measure generation speed')
    ap.add_argument('--epochs', type=int, default=20, help='CNN training epochs (default 20)')
    ap.add_argument('--train-seeds', type=int, nargs='+', default=[0], help='CNN training seeds (default 0)')
    ap.add_argument('--n', type=int, default=4000); ap.add_argument('--size', type=int, default=64); ap.add_argument('--seed', type=int, default=42)
    a = ap.parse_args(argv)
    print(f'python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}' if hasattr(os, 'getloadavg') else '')
    rates = bench_speed()
    print(f'\nbar: >= 500 images/s at 128 px (CPU time): {rates[128]:.0f} -> {"PASS" if rates[128] >= 500 else "FAIL"}')
    if a.speed_only: return 0
    lin_r, cnn_rs, mean_acc = bench_learning(a.n, a.size, a.seed, a.epochs, a.train_seeds)
    print(f'\nbar: logistic regression <= 0.70 test accuracy: {lin_r["accuracy"]:.3f} -> {"PASS" if lin_r["accuracy"] <= 0.70 else "FAIL"}')
    print(f'bar: small CNN >= 0.85 test accuracy (mean over {len(cnn_rs)} training seed(s)): {mean_acc:.3f} -> {"PASS" if mean_acc >= 0.85 else "FAIL"}')
    return 0


if __name__ == '__main__': raise SystemExit(main())
