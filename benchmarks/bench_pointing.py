"""Chapter 10's pointing game over seeds and fracture spreads: do Grad-CAM and LayerCAM point better than blind guesses?

    python benchmarks/bench_pointing.py                          # off_centre 0.2 and 0.3, seeds 42, 0, 1, 2 (about 4 minutes)
    python benchmarks/bench_pointing.py --off-centre 0.3 --seeds 42
    python benchmarks/bench_pointing.py --by-layer                # every depth, four networks, seeds 42 and 0 (about 15 minutes, 10 of them Lite0)
    python benchmarks/bench_pointing.py --by-layer --networks efficientnet_lite0
    python benchmarks/bench_pointing.py --checkpoint runs/lite0/best.pt --data ../shared/data/FracAtlas   # a trained model, real boxes

For each setting: the synthetic set (4,000 images at 64 px, the quick profile's) drawn with the generator's
`off_centre` (0.2 is the course's dataset, 0.3 the variant chapter 10 uses), chapter 10's quick model (the narrowed
Inception, 6 epochs, batches of 64, one-cycle at 1e-2, flips, one thread) trained with `train_run`, then Grad-CAM and
LayerCAM at `block2` (16 x 16 maps, tolerance 2 px) on the fractured test images, against a peak always at the centre
and a random peak. Bar (issue #18; chapter 10 asserts it for LayerCAM): the hit rate above both baselines.

`--by-layer` chooses the heat map of the tools (`fracture-course predict --heatmaps`, the web demo): on `off_centre=0.3`,
four of the course's networks (chapter 10's Inception; the six-stage EnhancedCNN of chapters 9 and 13; the main job's
SimpleCNN and the ImageNet-pretrained EfficientNet-Lite0, each with its quick recipe) play the game at the last stage of every map side (`pointing_by_layer`), Grad-CAM and
LayerCAM, and each method is scored at its default layer (`explain_layer`) by its margin over the centre at that layer's
tolerance. Bar: LayerCAM's margin above Grad-CAM's for every network and seed. It plays on each run's fractured *test*
images: the tools' rule was chosen there (chapter 10 says so, and replays the choice on its validation split, where
the same layer wins, before reporting on test).

`--checkpoint CKPT --data PATH` plays the same game, at every depth and with each method's default layer marked, for a
model already trained (by `fracture-course train`) on a dataset with fracture boxes, FracAtlas for instance: its
fractured test images, at the checkpoint's own input size. It trains nothing, and has no bar: it measures whether the
tools' rule holds for that model.
"""
import os
for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ.setdefault(_v, '1')
import argparse, platform, time
from dataclasses import replace

import torch

from fracture_course.config import get_config
from fracture_course.data import load_dataset
from fracture_course.learner import load_checkpoint
from fracture_course.transforms import Preset, eval_tfms
from fracture_course.evaluate import load_inputs
from fracture_course.synthetic import default_synthetic_dir
from fracture_course.train import train_run
from fracture_course.interpret import (GradCAM, LayerCAM, explain_split, pointing_game, pointing_baselines, heatmap_peak,
                                       pointing_by_layer, explain_layer, item_input_boxes)

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


WIDE6 = (8, 16, 32, 32, 32, 32)  # chapters 9 and 13's six-stage EnhancedCNN, quick widths
NETWORKS = {  # name: how chapter 10, chapter 9 and the main job train it on the quick profile
    'inception': lambda cfg, data: train_run('inception', data, None, replace(cfg, batch_size=64), progress=False, recipe_overrides=RECIPE, **NARROW),
    'enhanced_cnn (6 stages)': lambda cfg, data: train_run('enhanced_cnn', data, None, cfg, progress=False, widths=WIDE6, hidden=32, dropout=0.2,
                                                           recipe_overrides=dict(epochs=6, lr=5e-3, aug='flip', channels_last=True)),
    'simple_cnn (main job)': lambda cfg, data: train_run('simple_cnn', data, None, cfg, progress=False),
    'efficientnet_lite0 (ImageNet weights)': lambda cfg, data: train_run('efficientnet_lite0', data, None, cfg, progress=False),  # its quick recipe
}

LABEL = {'layercam': 'LayerCAM', 'gradcam': 'Grad-CAM'}

def print_layers(rows:list, model, preset) -> dict:
    "Print `pointing_by_layer`'s rows; return each method's margin over the centre at its default layer (`explain_layer`)"
    print(f"  {'layer':10} {'side':>4} {'tol px':>6} {'centre':>6} {'random':>6} {'Grad-CAM':>8} {'LayerCAM':>8}")
    for r in rows:
        print(f"  {r['layer']:10} {r['map side']:4d} {r['tolerance px']:6.1f} {r['centre']:6.3f} {r['random']:6.3f} {r['Grad-CAM']:8.3f} {r['LayerCAM']:8.3f}")
    at = {m: next(r for r in rows if r['layer'] == explain_layer(model, preset.size, preset.channels, m)[0]) for m in LABEL}
    margin = {m: at[m][LABEL[m]] - at[m]['centre'] for m in LABEL}
    print(f"  default layers: LayerCAM at {at['layercam']['layer']} {margin['layercam']:+.3f} over the centre, "
          f"Grad-CAM at {at['gradcam']['layer']} {margin['gradcam']:+.3f}", flush=True)
    return margin

def by_layer(seeds, off_centre:float=0.3, networks=None) -> bool:
    "The pointing game at every depth of the networks; True when LayerCAM's margin over the centre beats Grad-CAM's every time"
    ok = True
    for net, train in NETWORKS.items():
        if networks and not any(net.startswith(n) for n in networks): continue
        for seed in seeds:
            cfg = get_config('quick', seed=seed)
            data = load_dataset(default_synthetic_dir(cfg, progress=False, off_centre=off_centre), seed=seed)
            t0 = time.perf_counter(); run = train(cfg, data)
            model, dls = run['learner'].model.eval(), run['learner'].dls
            items = data.split('test'); fx = [i for i, o in enumerate(items) if o.label == 1]
            heat, boxes, inputs = explain_split(model, dls.test, items, dls.preset)
            rows = pointing_by_layer(model, inputs[fx], [boxes[i] for i in fx])
            print(f"{net}, seed {seed}, off_centre {off_centre}: test AUROC {run['test']['auroc']:.3f} ({time.perf_counter() - t0:.0f} s)")
            margin = print_layers(rows, model, dls.preset)
            ok &= margin['layercam'] > margin['gradcam']
    print(f"bar: LayerCAM's margin over the centre above Grad-CAM's at their default layers, every network and seed -> {'PASS' if ok else 'FAIL'}")
    return ok


def checkpoint_by_layer(checkpoint:str, data_path:str, seed:int=42, bs:int=16) -> dict:
    "The pointing game at every depth of a trained checkpoint, on the fractured test images with boxes of a dataset"
    model, info = load_checkpoint(checkpoint)
    model.eval(); preset = Preset.from_dict(info['preprocessing'])
    data = load_dataset(data_path, seed=seed)
    items = [o for o in data.split('test') if o.label == 1]
    t0 = time.perf_counter()
    x, ok, failed = load_inputs([o.path for o in items], preset)
    x = eval_tfms(preset)(x)  # uint8 images -> model inputs, as `predict_inputs` prepares them
    boxes = [item_input_boxes(items[i], preset) for i in ok]
    keep = [j for j, b in enumerate(boxes) if len(b)]
    rows = pointing_by_layer(model, x[keep], [boxes[j] for j in keep], bs=bs)
    print(f"{info.get('arch')} from {checkpoint} ({preset}), {data.name} test split: {len(keep)} fractured images with boxes "
          f"({len(failed)} unreadable, {len(ok) - len(keep)} without boxes), {time.perf_counter() - t0:.0f} s")
    return print_layers(rows, model, preset)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, nargs='+', help='default 42 0 1 2 (with --by-layer: 42 0)')
    ap.add_argument('--off-centre', type=float, nargs='+', help='default 0.2 0.3 (with --by-layer: 0.3, the first value given)')
    ap.add_argument('--epochs', type=int, default=6, help="training epochs (chapter 10's quick model: 6)")
    ap.add_argument('--by-layer', action='store_true', help='every depth of four networks (default seeds 42 and 0, off_centre 0.3)')
    ap.add_argument('--checkpoint', metavar='CKPT', help='with --data: the game at every depth of this trained model instead (no training)')
    ap.add_argument('--data', metavar='PATH', help="with --checkpoint: a dataset with fracture boxes (FracAtlas), split with --seeds' first value")
    ap.add_argument('--networks', nargs='+', metavar='NAME', help=f"with --by-layer, only these (default all: {', '.join(n.split()[0] for n in NETWORKS)})")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f'python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}')
    if a.checkpoint:
        if not a.data: ap.error('--checkpoint needs --data')
        checkpoint_by_layer(a.checkpoint, a.data, (a.seeds or [42])[0]); return 0
    if a.by_layer: return 0 if by_layer(a.seeds or [42, 0], (a.off_centre or [0.3])[0], a.networks) else 1
    a.seeds, a.off_centre = a.seeds or [42, 0, 1, 2], a.off_centre or [0.2, 0.3]
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
