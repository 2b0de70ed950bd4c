"""How fast this machine is right now: one training step of chapter 5's small network on one CPU thread.

    python benchmarks/bench_machine.py            # before and after a timing, to read it

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

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    m, x, y = small_cnn().to(memory_format=torch.channels_last), torch.randn(32, 1, 64, 64).contiguous(memory_format=torch.channels_last), torch.randint(0, 2, (32,))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    def step(): loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(5): step()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps): step()
        times.append((time.perf_counter() - t0) / a.steps * 1e3)
    print(f"chapter 5's network, batch 32 at 64 px, one thread: {statistics.median(times):.1f} ms a training step "
          f"(median of {a.repeats} x {a.steps}; load average {os.getloadavg()[0]:.1f}; torch {torch.__version__})")

if __name__ == '__main__': main()
