"""How fast this machine is right now: one training step of chapter 5's small network on one CPU thread.

    python benchmarks/bench_machine.py            # before and after a timing, to read it
    python benchmarks/bench_machine.py --levers   # the same step with and without channels-last, bf16 autocast, batch 64

The development machine's speed varies by about a third from hour to hour (other tenants share its cores). Timing
rows in the README give this figure beside them: before the main job's cells became `slow`, a whole-course `nbdev-test`
that took 143-150 s when a step cost 36 ms took 182-199 s when it cost 44-49 ms; since then, 135-157 s at 36-44 ms.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
import argparse, statistics, time
import torch, torch.nn.functional as F

from bench_synthetic import small_cnn  # chapters 1 and 5's network (this folder)

torch.set_num_threads(1)

def step_ms(steps:int=20, repeats:int=3, channels_last:bool=True, bf16:bool=False, batch:int=32) -> float:
    "Median milliseconds of one training step of chapter 5's network at 64 px on one thread"
    torch.manual_seed(0)
    m, x, y = small_cnn(), torch.randn(batch, 1, 64, 64), torch.randint(0, 2, (batch,))
    if channels_last: m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = F.cross_entropy(m(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(5): step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps): step()
        times.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(times)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--levers', action='store_true', help='also time the step with bf16 autocast, without channels-last, and at batch 64')
    a = ap.parse_args(argv)
    print(f"chapter 5's network, batch 32 at 64 px, one thread: {step_ms(a.steps, a.repeats):.1f} ms a training step "
          f"(median of {a.repeats} x {a.steps}; load average {os.getloadavg()[0]:.1f}; torch {torch.__version__})")
    if a.levers:
        print('| channels-last | bf16 autocast | batch | ms a step | us an image |\n|---|---|---|---|---|')
        for cl in (True, False):
            for bf16 in (False, True):
                for batch in (32, 64):
                    ms = step_ms(a.steps, a.repeats, cl, bf16, batch)
                    print(f'| {cl} | {bf16} | {batch} | {ms:.1f} | {ms / batch * 1e3:.0f} |', flush=True)

if __name__ == '__main__': main()
