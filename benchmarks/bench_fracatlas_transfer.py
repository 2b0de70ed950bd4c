"""Fine-tune EfficientNet-Lite0 (offline ImageNet weights) on FracAtlas and report AUROC, and sensitivity and
specificity on the course's test split at a threshold chosen on its validation split, against the trivial
classifier, with the wall time. The defaults are the course's CPU recipe (what `fracture-course train --model
efficientnet_lite0 --profile full` runs).

    python benchmarks/bench_fracatlas_transfer.py [--data ../shared/data/FracAtlas] [--device cpu] [--seed N] [options]

`--models N` trains N runs (training seeds seed, seed+1, ...) on the same split and also reports the average of their
flip-TTA probabilities, with the threshold chosen on validation again; the wall time is the sum of the N trainings.
"""
import argparse, json, sys, time
from pathlib import Path
import torch
from fracture_course.config import get_config, seed_everything
from fracture_course.data import load_dataset, trivial_baseline
from fracture_course.train import train_run, RECIPES
from fracture_course.tta import tta_probs, hflip
from fracture_course.evaluate import threshold_for_sensitivity
from fracture_course.learner import binary_metrics

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2]/'shared/data/FracAtlas'))
    ap.add_argument('--model', default='efficientnet_lite0')
    ap.add_argument('--device', default='auto'); ap.add_argument('--seed', type=int, default=42, help='seed of the training run (initialisation, shuffling, augmentation)')
    ap.add_argument('--split-seed', type=int, default=42, help="seed of the course's train/valid/test split (42: the course split)")
    ap.add_argument('--override', default='{}', help='JSON dict of recipe fields to override, e.g. {"sizes": [160, 224]}')
    ap.add_argument('--models', type=int, default=1, help='train this many runs (training seeds seed, seed+1, ...) and also report their average')
    ap.add_argument('--json', metavar='FILE', help='also write the results as JSON')
    a = ap.parse_args()
    if not Path(a.data).exists(): sys.exit(f'FracAtlas not found at {a.data}; pass --data (a FracAtlas folder or a manifest CSV)')
    cfg = get_config('full', device=a.device, seed=a.seed)
    data = load_dataset(a.data, seed=a.split_seed)
    print(f'{a.model} on FracAtlas ({len(data)} images, split seed {a.split_seed}: {data.counts()}), training seed {a.seed}, device {cfg.device}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}')
    print('recipe:', {**vars(RECIPES[a.model]), **json.loads(a.override)})
    runs = []
    for seed in range(a.seed, a.seed + a.models):
        if a.models > 1: print(f'\n--- run {len(runs) + 1} of {a.models}, training seed {seed}')
        r = train_run(a.model, data, None, get_config('full', device=a.device, seed=seed), progress=False, recipe_overrides=json.loads(a.override))
        report(r); runs.append(r)
    if a.models > 1: report(average(runs))
    if a.json:
        out = [{k: v for k, v in r.items() if k != 'learner'} for r in runs]
        Path(a.json).write_text(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))

def probs(r):
    "Flip-TTA probabilities and targets of a run's final model on validation and test"
    learn = r['learner']
    return {k: tta_probs(learn.model, dl, (lambda x: x, hflip), learn.device) for k, dl in (('valid', learn.dls.valid), ('test', learn.dls.test))}

def average(runs):
    "A result like `train_run`'s for the average of the runs' probabilities (threshold chosen on validation again)"
    ps = [probs(r) for r in runs]
    avg = {k: (sum(p[k][0] for p in ps) / len(ps), ps[0][k][1]) for k in ('valid', 'test')}
    thr = threshold_for_sensitivity(*avg['valid'], runs[0]['target_sensitivity'])
    print(f'\n--- average of the {len(runs)} runs\' probabilities')
    return {'seconds': sum(r['seconds'] for r in runs), 'threshold': thr, 'target_sensitivity': runs[0]['target_sensitivity'],
            'valid_at_threshold': binary_metrics(*avg['valid'], thr), 'test_at_threshold': binary_metrics(*avg['test'], thr),
            'test': binary_metrics(*avg['test'], 0.5), 'test_trivial': runs[0]['test_trivial']}

def report(r):
    v, t, triv = r['valid_at_threshold'], r['test_at_threshold'], r['test_trivial']
    print(f"\ntraining wall time: {r['seconds']:.0f} s ({r['seconds']/60:.1f} min)")
    print(f"threshold {r['threshold']:.3f} chosen on validation for sensitivity >= {r['target_sensitivity']}: "
          f"valid sensitivity {v['sensitivity']:.3f}, specificity {v['specificity']:.3f}")
    print(f"{'':10} {'AUROC':>6} {'sens':>6} {'spec':>6} {'acc':>6}")
    print(f"{'test':10} {t['auroc']:6.3f} {t['sensitivity']:6.3f} {t['specificity']:6.3f} {t['accuracy']:6.3f}")
    print(f"{'test@0.5':10} {r['test']['auroc']:6.3f} {r['test']['sensitivity']:6.3f} {r['test']['specificity']:6.3f} {r['test']['accuracy']:6.3f}")
    print(f"{'trivial':10} {0.5:6.3f} {triv['sensitivity']:6.3f} {triv['specificity']:6.3f} {triv['accuracy']:6.3f}  (always '{triv['predicts']}')")

if __name__ == '__main__': main()
