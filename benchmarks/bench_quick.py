"""The course's main job on the quick profile, as a new user runs it: wall time and test metrics, over seeds.

    python benchmarks/bench_quick.py                   # seeds 42, 0, 1; a fresh cache each (data generation included)
    python benchmarks/bench_quick.py --seeds 42 --model inception

Each run is `fracture-course train --model MODEL --seed SEED --quiet` in a new process with an empty
FRACTURE_CACHE_DIR, so the time includes generating the 4,000 synthetic radiographs and decoding them, as on a
fresh laptop. Bars (issue #18): simple_cnn test AUROC >= 0.90 and the whole command <= 60 s on the 2-core CPU.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path


def run(model:str, seed:int, extra:list) -> dict:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, 'FRACTURE_CACHE_DIR': str(Path(d)/'cache'), 'FRACTURE_PROFILE': 'quick', 'FRACTURE_DATASET': 'synthetic'}
        cmd = [str(Path(sys.executable).parent/'fracture-course'), 'train', '--model', model, '--seed', str(seed), '--quiet', '--out', str(Path(d)/'run'), *extra]
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode: raise SystemExit(f'{" ".join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}')
        m = json.loads((Path(d)/'run'/'metrics.json').read_text())
    return dict(seed=seed, wall=wall, train=m['seconds'], best_epoch=m['best_epoch'], **{k: m['test'][k] for k in ('auroc', 'sensitivity', 'specificity', 'accuracy')},
                sens_thr=m['test_at_threshold']['sensitivity'], spec_thr=m['test_at_threshold']['specificity'], threshold=m['threshold'])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='simple_cnn'); ap.add_argument('--seeds', type=int, nargs='+', default=[42, 0, 1])
    a, extra = ap.parse_known_args(argv)
    print(f'python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; '
          f'fracture-course train --model {a.model} {" ".join(extra)} (quick profile, fresh cache)')
    rows = []
    for s in a.seeds:
        r = run(a.model, s, extra); rows.append(r)
        print(f"  seed {s:3d}: {r['wall']:5.1f} s wall ({r['train']:.1f} s from data to trained model), best epoch {r['best_epoch']}; test AUROC {r['auroc']:.3f}, "
              f"at 0.5 sens {r['sensitivity']:.3f} spec {r['specificity']:.3f} acc {r['accuracy']:.3f}; "
              f"at the valid threshold {r['threshold']:.3f} sens {r['sens_thr']:.3f} spec {r['spec_thr']:.3f}", flush=True)
    auc, wall = [r['auroc'] for r in rows], [r['wall'] for r in rows]
    print(f'test AUROC min {min(auc):.3f} median {statistics.median(auc):.3f} max {max(auc):.3f}; wall time max {max(wall):.1f} s')
    if a.model == 'simple_cnn' and not extra:
        print(f'bar: test AUROC >= 0.90 at every seed: {"PASS" if min(auc) >= 0.90 else "FAIL"}; '
              f'whole command <= 60 s: {"PASS" if max(wall) <= 60 else "FAIL"}')
    return 0


if __name__ == '__main__': raise SystemExit(main())
