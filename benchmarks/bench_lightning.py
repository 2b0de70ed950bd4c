"""Lightning's cost against the course's Learner and a bare PyTorch loop, and what several devices buy.

    python benchmarks/bench_lightning.py [--runs 3] [--model inception] [--skip-ddp] [--skip-gpu] [--threads-too]

1. Training-epoch time of the same network on the same cached loaders (quick profile: the narrow, channels-last
   Inception of chapter 7 on 2,800 synthetic 64 px images, one CPU thread): a bare loop (forward, loss, backward,
   Adam step), the course `Learner` (`fit_one_cycle`, metrics recorded), and Lightning's `Trainer` with
   `FractureModule` (the same one-cycle schedule, torchmetrics). Median of `--runs` epochs after one warm-up epoch.
2. One against two CPU processes with DDP over gloo (`fit_on_devices(accelerator='cpu', devices=N, strategy='ddp')`,
   run as scripts, as DDP needs), one thread each: each epoch's time (training and validation) and the whole run.
3. On a CUDA GPU (when there is one): training images/s of the full-width Inception at 224 px with 32-bit,
   bf16-mixed and 16-mixed precision, and with `torch.compile`.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, textwrap, time, warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import lightning as L
from torch import nn

from fracture_course.config import get_config, seed_everything
from fracture_course.data import load_course_data
from fracture_course.learner import Learner
from fracture_course.lightning import FractureModule, FractureDataModule, quiet_lightning
from fracture_course.models import create_model
from fracture_course.train import recipe_for

NARROW = dict(in_channels=1, branch_channels=(8, 12, 16, 24), stem_dropout=0., head_dropout=0.)  # chapter 7's quick Inception

def make_net(name:str):
    seed_everything(42)
    net = create_model(name, **(NARROW if name == 'inception' else dict(in_channels=1, img_size=64, widths=(8, 16, 32))))
    return net.to(memory_format=torch.channels_last)

class Clock:
    "Wall and CPU seconds of one epoch (CPU time of this process: steadier than wall time on a shared machine)"
    def start(self): self.w, self.c = time.perf_counter(), time.process_time()
    def stop(self): return time.perf_counter() - self.w, time.process_time() - self.c

class Bare:
    "Forward, loss, backward, Adam step: nothing else"
    def __init__(self, name, dl): self.net, self.dl = make_net(name), dl; self.opt = torch.optim.Adam(self.net.parameters(), 5e-3)
    def epoch(self, clock):
        clock.start(); self.net.train()
        for xb, yb in self.dl:
            loss = nn.functional.cross_entropy(self.net(xb), yb); loss.backward(); self.opt.step(); self.opt.zero_grad(set_to_none=True)
        return clock.stop()

class Course:
    "The course's Learner: one-cycle, the Recorder's metrics, callbacks"
    def __init__(self, name, dl): self.learn = Learner(make_net(name), SimpleNamespace(train=dl, valid=None), lr=5e-3, device='cpu', progress=False)
    def epoch(self, clock): clock.start(); self.learn.fit_one_cycle(1); return clock.stop()

class EpochClock(L.Callback):
    "Times the training epoch inside `Trainer.fit` (not the trainer's start-up)"
    def __init__(self, clock): self.clock = clock
    def on_train_epoch_start(self, trainer, module): self.clock.start()
    def on_train_epoch_end(self, trainer, module): self.took = self.clock.stop()

class Lightning:
    "Lightning's Trainer with `FractureModule`: the same one-cycle schedule, torchmetrics"
    def __init__(self, name, dl): self.module, self.dl = FractureModule(make_net(name), lr=5e-3), dl
    def epoch(self, clock):
        cb = EpochClock(clock)
        with quiet_lightning():
            L.Trainer(accelerator='cpu', devices=1, max_epochs=1, callbacks=[cb], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0).fit(self.module, self.dl)
        return cb.took

def loop_overhead(name, runs):
    torch.set_num_threads(1)
    cfg = get_config('quick')
    data = load_course_data(cfg, verbose=False)
    dm = FractureDataModule(data, cfg, recipe_for(name, 'quick', aug='flip')); dm.setup()
    dl = dm.dls.train
    print(f"## 1. Training-epoch time, {name} (quick widths, channels-last), {len(dl.dataset)} images of {cfg.image_size} px, batch {dl.batch_size}, "
          f"1 thread; one warm-up epoch each, then {runs} rounds of one epoch each, the three loops taking turns; medians")
    loops = {'bare loop': Bare(name, dl), 'Learner': Course(name, dl), 'Lightning Trainer': Lightning(name, dl)}
    clock = Clock()
    for loop in loops.values(): loop.epoch(clock)
    times = {k: [] for k in loops}
    for _ in range(runs):
        for k, loop in loops.items(): times[k].append(loop.epoch(clock))
    med = {k: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for k, t in times.items()}
    for k, (w, c) in med.items():
        print(f"  {k:18} wall {w:6.2f} s  CPU {c:6.2f} s  (CPU of each: {', '.join(f'{c:.2f}' for _, c in times[k])});  "
              f"ratio to the bare loop: wall {w / med['bare loop'][0]:.2f}, CPU {c / med['bare loop'][1]:.2f}")
    (lw, lc), (cw, cc) = med['Lightning Trainer'], med['Learner']
    print(f"  Lightning / Learner: wall {lw / cw:.2f}, CPU {lc / cc:.2f}")
    return med

SCRIPT = textwrap.dedent('''
    import json, sys, time, torch
    from fracture_course.config import get_config
    from fracture_course.lightning import fit_on_devices
    if __name__ == '__main__':
        t0 = time.perf_counter()
        narrow = dict(branch_channels=(8, 12, 16, 24), stem_dropout=0., head_dropout=0.) if sys.argv[1] == 'inception' else {}
        r = fit_on_devices(sys.argv[1], None, sys.argv[2], get_config('quick'), devices=int(sys.argv[3]), strategy='ddp', accelerator='cpu',
                           progress=False, recipe_overrides={'epochs': 2, 'aug': 'flip', 'lr': 5e-3, 'tta': False}, **narrow)
        if r.get('global_rank', 0) == 0:
            print('RESULT', json.dumps({'epoch_s': [h['time'] for h in r['history']], 'run_s': time.perf_counter() - t0,
                                        'valid_auroc': r['history'][-1]['valid_auroc'], 'threads': __import__('torch').get_num_threads()}))
''')

def ddp_cpu(name, threads_too=False):
    print(f"\n## 2. DDP on this CPU ({os.cpu_count()} cores, shared by N processes): {name} (quick widths), quick profile, 2 epochs, "
          "fit_on_devices(accelerator='cpu', strategy='ddp')")
    tmp = Path(tempfile.mkdtemp()); script = tmp/'run.py'; script.write_text(SCRIPT)
    configs = [(1, 1), *([(1, os.cpu_count())] if threads_too else []), (2, max(1, os.cpu_count() // 2))]  # one process on one core (or all); N sharing them
    for n, threads in configs:
        env = {**{k: v for k, v in os.environ.items() if k != 'IN_TEST'}, 'OMP_NUM_THREADS': str(threads)}
        tag = tmp/f'out{n}x{threads}'
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, str(script), name, str(tag), str(n)], capture_output=True, text=True, env=env, timeout=900)
        if p.returncode: print(p.stderr[-2000:]); continue
        r = json.loads(next(l for l in p.stdout.splitlines() if l.startswith('RESULT '))[7:])
        print(f"  {n} process(es), {r['threads']} thread(s) each: epochs {', '.join(f'{t:.2f}' for t in r['epoch_s'])} s (train + validation), "
              f"run {time.perf_counter() - t0:.1f} s with start-up; valid AUROC {r['valid_auroc']:.3f}")
    print("  Two processes on two cores against one process on one: the epoch can at best halve, minus the gradient all-reduce every "
          "step; against one process using both cores (--threads-too) expect no gain at all. DDP pays off with one process per GPU. "
          "On a machine shared with other programs, threads that spin while others hold the cores make multi-thread figures swing widely.")

def gpu(steps=60, bs=64):
    if not torch.cuda.is_available(): print("\n## 3. GPU: no CUDA device here; skipped"); return
    print(f"\n## 3. {torch.cuda.get_device_name()}: full-width Inception, 3x224 px, batch {bs}, {steps} steps after 10 warm-up ones")
    x, y = torch.randn(bs * 4, 3, 224, 224), torch.randint(0, 2, (bs * 4,))
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True, drop_last=True)
    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, i):
            if trainer.global_step == 10: torch.cuda.synchronize(); self.t0 = time.perf_counter()
        def on_train_end(self, trainer, module): torch.cuda.synchronize(); self.s = time.perf_counter() - self.t0
    for precision in ('32-true', 'bf16-mixed', '16-mixed'):
        for compiled in (False, True):
            seed_everything(42)
            net = create_model('inception').to(memory_format=torch.channels_last)
            if compiled: net = torch.compile(net)
            timer = Timer()
            trainer = L.Trainer(accelerator='cuda', devices=1, precision=precision, max_steps=steps + 10, callbacks=[timer], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
            with quiet_lightning(): trainer.fit(FractureModule(net), dl)
            print(f"  {precision:10} {'torch.compile' if compiled else 'eager':13} {steps * bs / timer.s:8.0f} images/s")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', type=int, default=3); p.add_argument('--model', default='inception', choices=['inception', 'simple_cnn'])
    p.add_argument('--skip-ddp', action='store_true'); p.add_argument('--skip-gpu', action='store_true')
    p.add_argument('--threads-too', action='store_true', help='also time one process with a thread per core (slow on a busy machine)')
    a = p.parse_args()
    warnings.filterwarnings('ignore')
    print(f"torch {torch.__version__}, lightning {L.__version__}, {os.cpu_count()} CPU cores")
    loop_overhead(a.model, a.runs)
    if not a.skip_ddp: ddp_cpu(a.model, a.threads_too)
    if not a.skip_gpu: gpu()
