"""Chapter 10's pointing game over seeds and fracture spreads: do Grad-CAM and LayerCAM point better than blind guesses?

    python benchmarks/bench_pointing.py                          # off_centre 0.2 and 0.3, seeds 42, 0, 1, 2 (about 4 minutes)
    python benchmarks/bench_pointing.py --off-centre 0.3 --seeds 42

For each setting: the synthetic set (4,000 images at 64 px, the quick profile's) drawn with the generator's
`off_centre` (0.2 is the course's dataset, 0.3 the variant chapter 10 uses), chapter 10's quick model (the narrowed
Inception, 6 epochs, batches of 64, one-cycle at 1e-2, flips, one thread) trained with `train_run`, then Grad-CAM and
LayerCAM at `block2` (16 x 16 maps, tolerance 2 px) on the fractured test images, against a peak always at the centre
and a random peak. Bar (issue #18; chapter 10 asserts it for LayerCAM): the hit rate above both baselines.
"""
import os
for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(_v, '1')
import argparse, platform, time
from dataclasses import replace

import torch

from fracture_course.config import get_config
from fracture_course.data import load_dataset
from fracture_course.synthetic import default_synthetic_dir
from fracture_course.train import train_run
from fracture_course.interpret import GradCAM, LayerCAM, explain_split, pointing_game, pointing_baselines, heatmap_peak

NARROW = dict(stem_channels=16, branch_channels=(8, 8, 16, 16), stem_dropout=0.0, head_dropout=0.0)  # chapter 10, quick
RECIPE = dict(epochs=6, lr=1e-2, aug='flip', channels_last=True, tta=False)


def play(seed:int, off_centre:float, epochs:int=6) -> dict:
    "Train chapter 10's model on the synthetic set drawn with `off_centre` and play the pointing game on its test split"
    cfg = get_config('quick', seed=seed)
    data = load_dataset(default_synthetic_dir(cfg, progress=False, off_centre=off_centre), seed=seed)
    t0 = time.perf_counter()
    run = train_run('inception', data, None, replace(cfg, batch_size=64), progress=False, recipe_overrides={**RECIPE, 'epochs': epochs}, **NARROW)
    model, dls = run['learner'].model.eval(), run['learner'].dls
    items = data.split('test'); fx = [i for i, o in enumerate(items) if o.label == 1]
    layer = model.get_submodule('block2')
    r = dict(seed=seed, off_centre=off_centre, auroc=run['test']['auroc'], seconds=time.perf_counter() - t0)
    with GradCAM(model, layer) as gc: side = gc(next(iter(dls.test))[0][:1])[0].shape[-1]
    cell = dls.preset.size / side  # input pixels per map cell; a peak within half a cell of a box counts
    for name, cam in [('gradcam', GradCAM), ('layercam', LayerCAM)]:
        heat, boxes, _ = explain_split(model, dls.test, items, dls.preset, layer, cam=cam)
        pg = pointing_game(heat[fx], [boxes[i] for i in fx], cell / 2)
        peaks = heatmap_peak(heat[fx]); missed = torch.tensor([not h for h in pg['hit']])
        edge = ((peaks < cell) | (peaks > dls.preset.size - cell)).any(1)
        r.update({name: pg['rate'], f'{name}_edge_misses': edge[missed].float().mean().item() if missed.any() else float('nan')})
    return {**r, **pointing_baselines([boxes[i] for i in fx], dls.preset.size, cell / 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', default=[42, 0, 1, 2])
    ap.add_argument('--off-centre', type=float, nargs='+', default=[0.2, 0.3])
    ap.add_argument('--epochs', type=int, default=6, help="training epochs (chapter 10's quick model: 6)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f'python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}')
    rows = []
    for oc in a.off_centre:
        for s in a.seeds:
            r = play(s, oc, a.epochs); rows.append(r)
            print(f"  off_centre {oc:.2f} seed {s:3d}: test AUROC {r['auroc']:.3f} ({r['seconds']:.0f} s); pointing game: centre {r['centre']:.3f}, "
                  f"random {r['random']:.3f}, Grad-CAM {r['gradcam']:.3f} (misses at the edge {r['gradcam_edge_misses']:.0%}), "
                  f"LayerCAM {r['layercam']:.3f} (misses at the edge {r['layercam_edge_misses']:.0%})", flush=True)
    for oc in a.off_centre:
        mine = [r for r in rows if r['off_centre'] == oc]
        for name, label in [('gradcam', 'Grad-CAM'), ('layercam', 'LayerCAM')]:
            wins = sum(r[name] > max(r['centre'], r['random']) for r in mine)
            print(f"bar: off_centre {oc:.2f}: {label} above both baselines in {wins} of {len(mine)} seeds -> {'PASS' if wins == len(mine) else 'FAIL'}")
    return 0


if __name__ == '__main__': raise SystemExit(main())
