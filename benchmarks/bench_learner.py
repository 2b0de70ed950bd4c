"""Learner overhead: the epoch time of `Learner.fit` divided by that of a bare PyTorch loop (CPU).

Both train the same model (same initial weights), on the same in-memory data, with the same shuffled batches and a
fresh Adam each epoch; both validate after training. The bare loop computes the loss and accuracy as any loop
would; the Learner adds its callbacks (device, mixed precision, recorder with six metrics on train and valid,
history) with the progress bar off. Epochs alternate between the two, and the figure is the ratio of the median
epoch times, measured both as wall-clock time and as the process's CPU time (the CPU time is the robust figure on a
machine shared with other jobs: it does not count the time other processes hold the cores). The bar is <= 1.05.

usage: python benchmarks/bench_learner.py [--rounds 9] [--threads 1] [--n-train 512] [--size 64] [--bs 64]

`--threads 1` (the default) keeps the timing stable on a shared machine; `--threads 0` leaves torch's default."""
import argparse, copy, statistics, time
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fracture_course.learner import Learner
from fracture_course.models import create_model


def bare_epoch(model, dls, lr):
    "One epoch of the plain loop: train, then validate with loss and accuracy"
    opt, loss_func = torch.optim.Adam(model.parameters(), lr=lr), nn.CrossEntropyLoss()
    model.train(); total = 0.
    for xb, yb in dls.train:
        loss = loss_func(model(xb), yb)
        loss.backward(); opt.step(); opt.zero_grad()
        total += loss.item() * len(yb)
    model.eval(); vloss, correct, n = 0., 0, 0
    with torch.no_grad():
        for xb, yb in dls.valid:
            out = model(xb)
            vloss += loss_func(out, yb).item() * len(yb); correct += (out.argmax(1) == yb).sum().item(); n += len(yb)
    return total / len(dls.train.dataset), vloss / n, correct / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=9)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--n-train', type=int, default=512)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=64)
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(a.n_train * 3 // 2, 1, a.size, a.size, generator=g), torch.randint(0, 2, (a.n_train * 3 // 2,), generator=g)
    ds_train, ds_valid = TensorDataset(x[:a.n_train], y[:a.n_train]), TensorDataset(x[a.n_train:], y[a.n_train:])
    def dls(seed):  # the same shuffled batches for both loops in a round
        return SimpleNamespace(train=DataLoader(ds_train, batch_size=a.bs, shuffle=True, generator=torch.Generator().manual_seed(seed)),
                               valid=DataLoader(ds_valid, batch_size=a.bs * 2))
    torch.manual_seed(0)
    model = create_model('simple_cnn', img_size=a.size, widths=(8, 16, 32))
    init = copy.deepcopy(model.state_dict())

    def timed(f):
        w, c = time.perf_counter(), time.process_time(); f(); return time.perf_counter() - w, time.process_time() - c
    def time_bare(seed):
        model.load_state_dict(init); return timed(lambda: bare_epoch(model, dls(seed), 1e-3))
    def time_learner(seed):
        model.load_state_dict(init)
        learn = Learner(model, dls(seed), lr=1e-3, device='cpu', progress=False)
        return timed(lambda: learn.fit(1))

    time_bare(-1); time_learner(-1)  # warm-up
    bare, learner = [], []
    for r in range(a.rounds):
        pair = (time_bare, time_learner) if r % 2 == 0 else (time_learner, time_bare)
        for f in pair: (bare if f is time_bare else learner).append(f(r))
    print(f'model simple_cnn widths (8, 16, 32), {a.size}px, {a.n_train} train + {len(ds_valid)} valid images, batch {a.bs}, '
          f'{torch.get_num_threads()} thread(s), {a.rounds} epochs each')
    ratios = {}
    for i, clock in enumerate(('wall', 'cpu')):
        b, l = [t[i] for t in bare], [t[i] for t in learner]
        mb, ml = statistics.median(b), statistics.median(l)
        ratios[clock] = ml / mb
        print(f'{clock:4} time: bare loop median epoch {mb*1000:7.1f} ms (min {min(b)*1000:.1f}), '
              f'Learner {ml*1000:7.1f} ms (min {min(l)*1000:.1f}); ratio of medians {ml/mb:.3f}, '
              f'median of per-round ratios {statistics.median(y / x for x, y in zip(b, l)):.3f}')
    ok = lambda r: 'OK' if r <= 1.05 else 'ABOVE THE BAR'
    print(f"overhead (Learner / bare loop): {ratios['cpu']:.3f} CPU time [{ok(ratios['cpu'])}], "
          f"{ratios['wall']:.3f} wall time [{ok(ratios['wall'])}]; bar <= 1.05")
    return ratios


if __name__ == '__main__': main()
