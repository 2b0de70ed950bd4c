"Evaluation: metrics against hand-computed values, bootstrap, threshold choice, calibration, error analysis, and `fracture-course evaluate`."
import argparse, json, math, re, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from conftest import bar_xrays
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_calibration_error

from fracture_course.evaluate import (EvaluationWarning, METRIC_NAMES, add_evaluate_args, borderline, bootstrap_ci, classification_report,
                                      confusion_matrix, evaluate_command, evaluation_metrics, expected_calibration_error,
                                      fit_temperature, group_metrics, load_inputs, nll, operating_point, paired_bootstrap,
                                      reliability_table, threshold_for_sensitivity, top_losses, trivial_probs,
                                      weighted_metrics)
from fracture_course.learner import save_checkpoint
from fracture_course.tta import get_logits
from fracture_course.models import create_model
from fracture_course.transforms import grey_preset

CLI = str(Path(sys.executable).parent/'fracture-course')
P8 = torch.tensor([0.9, 0.8, 0.4, 0.3, 0.6, 0.2, 0.1, 0.7]); T8 = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1])



def random_scores(n=300, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 2, (n,), generator=g)
    p = (torch.rand(n, generator=g) * 0.6 + 0.4 * t).clamp(0, 0.999)
    return (p * 20).round() / 20 if ties else p, t


# --- metrics --------------------------------------------------------------------------------------------------------

def test_metrics_match_hand_computed_values():
    m = evaluation_metrics(P8, T8)
    assert confusion_matrix(P8, T8).tolist() == [[3, 1], [1, 3]]
    assert (m['accuracy'], m['sensitivity'], m['specificity'], m['precision'], m['f1']) == (0.75, 0.75, 0.75, 0.75, 0.75)
    assert m['auroc'] == pytest.approx(15 / 16) and m['average_precision'] == pytest.approx((1 + 1 + 1 + 4 / 5) / 4)
    m3 = evaluation_metrics(P8, T8, 0.35)  # calls 0.4 and 0.6 fractured as well: TP 4, FP 1
    assert (m3['sensitivity'], m3['specificity']) == (1.0, 0.75) and m3['precision'] == pytest.approx(0.8) and m3['f1'] == pytest.approx(8 / 9)
    assert confusion_matrix(P8, T8, 0.35).tolist() == [[3, 1], [0, 4]]


def test_undefined_metrics_are_nan_not_zero():
    m = evaluation_metrics(torch.tensor([0.2, 0.9]), torch.tensor([0, 0]))
    assert math.isnan(m['sensitivity']) and math.isnan(m['auroc']) and math.isnan(m['average_precision']) and m['specificity'] == 0.5
    assert math.isnan(evaluation_metrics(torch.tensor([0.1, 0.2]), torch.tensor([1, 0]))['precision'])  # nothing called fractured


def test_classification_report_and_trivial_classifier():
    rep = classification_report(P8, T8, 0.35)
    assert rep.loc['fractured', 'recall'] == 1.0 and rep.loc['not fractured', 'recall'] == 0.75
    assert rep.loc['fractured', 'precision'] == pytest.approx(0.8) and rep.loc['not fractured', 'precision'] == 1.0
    assert rep['support'].tolist() == [4, 4, 8]
    triv = trivial_probs([0, 0, 0, 1], 5)
    assert triv.tolist() == [0.0] * 5
    m = evaluation_metrics(triv, torch.tensor([0, 0, 0, 1, 1]))
    assert m['accuracy'] == pytest.approx(0.6) and (m['sensitivity'], m['specificity'], m['auroc']) == (0.0, 1.0, 0.5)


def test_weighted_metrics_reproduce_torchmetrics_and_resampling():
    p, t = random_scores()
    w = {k: v.item() for k, v in weighted_metrics(p, t, torch.ones(1, len(p)), 0.5).items()}
    ref = evaluation_metrics(p, t, 0.5)
    for k in METRIC_NAMES: assert w[k] == pytest.approx(ref[k], abs=1e-5), k
    counts = torch.from_numpy(np.random.default_rng(1).multinomial(len(p), np.full(len(p), 1 / len(p)), size=3))
    got = weighted_metrics(p, t, counts, 0.5)
    for b in range(3):  # a weight of k is the same as repeating the image k times
        idx = torch.repeat_interleave(torch.arange(len(p)), counts[b])
        ref = evaluation_metrics(p[idx], t[idx], 0.5)
        for k in METRIC_NAMES: assert got[k][b].item() == pytest.approx(ref[k], abs=1e-5), (b, k)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    p, t = random_scores(200, seed=3)
    a, b = bootstrap_ci(p, t, 0.5, 500, seed=7), bootstrap_ci(p, t, 0.5, 500, seed=7)
    assert a.equals(b) and not a.equals(bootstrap_ci(p, t, 0.5, 500, seed=8))
    assert ((a['low'] <= a['estimate'] + 1e-9) & (a['estimate'] <= a['high'] + 1e-9)).all()
    width = (a['high'] - a['low'])['sensitivity']
    assert 0.03 < width < 0.3  # ~100 fractures: a few points either side
    with pytest.raises(ValueError, match='at least one'): bootstrap_ci(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match='n_boot must be at least 1 resample, got 0'): bootstrap_ci(p, t, n_boot=0)  # was torch.cat's error


def test_bootstrap_says_how_many_resamples_left_a_metric_undefined():
    "One fracture in twelve images: about a third of the resamples draw none, so sensitivity is undefined there; said, not dropped silently"
    p, t = torch.linspace(0.05, 0.6, 12), torch.tensor([0] * 11 + [1])
    with pytest.warns(EvaluationWarning, match=r'sensitivity was undefined in (\d+),.* of 400 resamples') as rec:
        ci = bootstrap_ci(p, t, 0.5, 400, seed=1)
    assert len(rec) == 1  # one warning, naming every metric concerned
    n = int(re.search(r'sensitivity was undefined in (\d+)', str(rec[0].message)).group(1))
    assert 100 < n < 190 and f'auroc was undefined in {n}' in str(rec[0].message)  # (11/12)^12 = 35% of resamples hold no fracture
    assert ci.loc['sensitivity', 'low'] == ci.loc['sensitivity', 'high'] == 1  # the defined resamples all find it
    with pytest.warns(EvaluationWarning, match=r'bootstrap: auroc was undefined in \d+ of 400 resamples \(') as rec:
        only = bootstrap_ci(p, t, 0.5, 400, seed=1, metrics=['auroc'])
    assert list(only.index) == ['auroc'] and only.equals(ci.loc[['auroc']]) and len(rec) == 1  # names only what was asked
    with pytest.raises(ValueError, match=r"metrics \['auc'\] are not among"): bootstrap_ci(p, t, metrics=['auc'])
    with pytest.warns(EvaluationWarning, match=r'the auroc difference was undefined in \d+ of 300 resamples'): paired_bootstrap(p, p.flip(0), t, n_boot=300)
    import warnings
    q, s = random_scores(200, seed=3)
    with warnings.catch_warnings(): warnings.simplefilter('error'); bootstrap_ci(q, s, 0.5, 300)  # enough images of each class: no warning


# --- threshold ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('target', [0.5, 0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize('ties', [False, True])
def test_threshold_meets_target_sensitivity_and_is_the_highest(target, ties):
    p, t = random_scores(301, seed=int(target * 100), ties=ties)
    thr = threshold_for_sensitivity(p, t, target)
    pos = p[t == 1]
    sens = ((pos > thr).sum() / len(pos)).item()
    assert (pos > thr).sum().item() >= math.ceil(target * len(pos) - 1e-9)  # exact count: no float32 rounding
    assert operating_point(p, t, thr)['sensitivity'] == pytest.approx(sens, abs=1e-6)
    higher = p[p > thr].min()  # the next possible threshold (at the lowest called score) calls fewer fractures
    assert ((pos > higher).sum().item() < math.ceil(target * len(pos) - 1e-9))


def test_threshold_edge_cases():
    assert threshold_for_sensitivity(P8, T8, 0.75) == pytest.approx(0.65)  # between 0.7 (found) and 0.6 (next lower)
    assert threshold_for_sensitivity(torch.full((4,), 0.5), torch.tensor([1, 0, 1, 0]), 0.9) < 0.5  # all tied: call all
    with pytest.warns(UserWarning, match='no threshold reaches'):  # probabilities of exactly 0: a threshold stays a probability (0), said
        assert threshold_for_sensitivity(torch.tensor([0.0, 0.0]), torch.tensor([1, 1])) == 0.0
    with pytest.raises(ValueError, match='No fractured'): threshold_for_sensitivity(torch.rand(4), torch.zeros(4))
    with pytest.raises(ValueError, match='target'): threshold_for_sensitivity(P8, T8, 1.5)


# --- calibration ----------------------------------------------------------------------------------------------------

def test_ece_matches_torchmetrics_and_the_reliability_table():
    p, t = random_scores(500, seed=5, ties=False)
    for n in (5, 10, 15):
        assert expected_calibration_error(p, t, n) == pytest.approx(binary_calibration_error(p, t, n_bins=n).item(), abs=1e-6)
    tab = reliability_table(p, t, 10)
    assert tab['count'].sum() == 500 and tab.loc[3, 'low'] == pytest.approx(0.3)
    assert expected_calibration_error(torch.tensor([0.25, 0.25, 0.25, 0.25]), torch.tensor([1, 0, 0, 0]), 4) == pytest.approx(0.0)


@pytest.mark.parametrize('scale', [3.0, 0.3])
def test_temperature_scaling_reduces_nll_on_a_miscalibrated_toy(scale):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 2, generator=g) * 2
    y = torch.bernoulli(z.softmax(1)[:, 1], generator=g).long()
    logits = scale * z  # too confident (3) or too timid (0.3)
    T = fit_temperature(logits, y)
    assert T == pytest.approx(scale, rel=0.15)
    assert nll(logits, y, T) < nll(logits, y) - 0.01
    from fracture_course.evaluate import fracture_probs
    assert evaluation_metrics(fracture_probs(logits, T), y)['auroc'] == pytest.approx(evaluation_metrics(fracture_probs(logits), y)['auroc'], abs=1e-3)


# --- error analysis -------------------------------------------------------------------------------------------------

def test_top_losses_borderline_and_groups():
    assert top_losses(P8, T8, 3).tolist() == [4, 2, 3]  # healthy 0.6, fractured 0.4, healthy 0.3
    assert set(borderline(P8, 0.5, 2).tolist()) == {2, 4}
    g = group_metrics(P8, T8, ['hand', 'hand', 'leg', 'hand', 'leg', 'leg', 'hand', 'leg'], 0.5, min_per_class=1)
    assert g.loc['hand', 'images'] == 4 and g.loc['hand', 'fractured'] == 2 and g.loc['hand', 'sensitivity'] == 1.0
    assert g.loc['leg', 'sensitivity'] == 0.5 and g.loc['leg', 'specificity'] == 0.5
    assert math.isnan(group_metrics(P8, T8, ['a'] * 8).loc['a', 'auroc'])  # 4 fractured and 4 healthy < 5: no AUROC
    with pytest.raises(ValueError, match='group names'): group_metrics(P8, T8, ['a'])


def test_top_losses_at_a_threshold_are_the_wrong_calls_only():
    "The probe's case: ranked by loss alone, a fracture at 0.0427 with threshold 0.0416 (found) was shown among the mistakes"
    p, t = torch.tensor([0.0427, 0.9, 0.01, 0.2]), torch.tensor([1, 0, 0, 1])
    assert top_losses(p, t, 4).tolist() == [0, 1, 3, 2]  # the found fracture has the highest loss
    assert top_losses(p, t, 4, threshold=0.0416).tolist() == [1]  # at the threshold: only the false alarm is a mistake
    assert top_losses(p, t, 4, threshold=0.5).tolist() == [0, 1, 3]  # at 0.5 both fractures are missed
    assert top_losses(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]), 3, threshold=0.5).tolist() == []  # no mistake: an empty gallery


def test_wilson_intervals_are_not_degenerate_for_small_groups():
    "The probe's case: 17 of 17 found gave a bootstrap interval of '1.0 to 1.0'"
    from fracture_course.evaluate import wilson_ci
    lo, hi = wilson_ci(17, 17)
    assert lo == pytest.approx(17 / (17 + 1.959964**2), abs=1e-4) and hi == 1.0  # Wilson at k = n: n / (n + z^2)
    assert wilson_ci(0, 5)[0] == 0.0 and wilson_ci(1, 2)[0] < 0.5 < wilson_ci(1, 2)[1]
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    y = torch.tensor([1] * 17 + [0] * 20); p = torch.cat([torch.full((17,), 0.9), torch.linspace(0.05, 0.95, 20)])
    g = group_metrics(p, y, ['mixed'] * 37, 0.5)
    assert (g.loc['mixed', 'sens_low'], g.loc['mixed', 'sens_high']) == (lo, hi)
    assert (g.loc['mixed', 'spec_low'], g.loc['mixed', 'spec_high']) == wilson_ci(int((p[17:] <= 0.5).sum()), 20)
    assert g.loc['mixed', 'auroc_low'] <= g.loc['mixed', 'auroc'] <= g.loc['mixed', 'auroc_high']


def test_group_auroc_needs_enough_of_both_classes():
    "The probe's case: a region with one fracture was given an AUROC (0.833)"
    y = torch.tensor([1] + [0] * 24 + [1] * 6 + [0] * 6)
    p = torch.rand(len(y), generator=torch.Generator().manual_seed(0))
    g = group_metrics(p, y, ['hip'] * 25 + ['leg'] * 12, 0.5)
    assert math.isnan(g.loc['hip', 'auroc']) and math.isnan(g.loc['hip', 'auroc_low']) and not math.isnan(g.loc['hip', 'sens_low'])
    assert g.loc['leg', 'auroc'] == pytest.approx(evaluation_metrics(p[25:], y[25:])['auroc'])
    assert not math.isnan(group_metrics(p, y, ['hip'] * 25 + ['leg'] * 12, 0.5, min_per_class=1).loc['hip', 'auroc'])


def test_paired_bootstrap_of_a_difference():
    from fracture_course.evaluate import paired_bootstrap
    p, t = random_scores(400, seed=11, ties=False)
    blurred = lambda s: (p + s * torch.rand(len(p), generator=torch.Generator().manual_seed(1))).clamp(0, 1)  # the same model, worse
    r = paired_bootstrap(p, blurred(0.6), t, 'auroc', n_boot=1000, seed=3)
    assert r == paired_bootstrap(p, blurred(0.6), t, 'auroc', n_boot=1000, seed=3)  # seeded
    assert r['difference'] == pytest.approx(evaluation_metrics(p, t)['auroc'] - evaluation_metrics(blurred(0.6), t)['auroc'])
    assert 0 < r['low'] <= r['difference'] <= r['high']  # a real gain, shown (measured: 0.071, 0.044 to 0.101)
    close = paired_bootstrap(p, blurred(0.3), t, 'auroc', n_boot=1000, seed=3)
    wa, wb = (bootstrap_ci(q, t, n_boot=1000, seed=s).loc['auroc'] for q, s in ((p, 3), (blurred(0.3), 4)))
    unpaired = math.hypot(wa['high'] - wa['low'], wb['high'] - wb['low'])  # the width if the two were resampled independently
    assert close['high'] - close['low'] < 0.9 * unpaired  # pairing removes the noise the two share (measured: 0.030 against 0.053)
    same = paired_bootstrap(p, p, t, 'sensitivity', n_boot=100)
    assert same['difference'] == same['low'] == same['high'] == 0
    two = paired_bootstrap(p, p, t, 'sensitivity', (0.3, 0.7), n_boot=200)  # each model at its own threshold
    assert two['difference'] == pytest.approx(evaluation_metrics(p, t, 0.3)['sensitivity'] - evaluation_metrics(p, t, 0.7)['sensitivity']) and two['low'] > 0
    with pytest.raises(ValueError, match='same images, in the same order'): paired_bootstrap(p, p[:-1], t)
    with pytest.raises(ValueError, match='not one of'): paired_bootstrap(p, p, t, 'auc')
    with pytest.raises(ValueError, match='n_boot must be at least 1'): paired_bootstrap(p, p, t, n_boot=0)
    with pytest.raises(ValueError, match='coverage'): paired_bootstrap(p, p, t, level=95)
    with pytest.raises(ValueError, match='NaN or outside 0..1'): paired_bootstrap(p, p * 2, t)


def test_get_logits_restores_training_mode():
    m = create_model('simple_cnn', img_size=16, widths=(4,), hidden=4).train()
    x = torch.randn(10, 1, 16, 16); dl = [(x[:6], torch.zeros(6)), (x[6:], torch.ones(4))]
    logits, y = get_logits(m, dl)
    assert logits.shape == (10, 2) and y.tolist() == [0] * 6 + [1] * 4 and m.training
    assert torch.allclose(logits, m.eval()(x), atol=1e-6)


# --- the command ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "Split folders of 32-px images (fractured ones carry a bright bar) and an untrained checkpoint"
    root = tmp_path_factory.mktemp('eval')
    bar_xrays(root/'data', (('train', 6), ('val', 10), ('test', 12)))
    torch.manual_seed(0)
    model = create_model('simple_cnn', img_size=32, widths=(4, 8), hidden=8)
    ckpt = save_checkpoint(root/'model.pt', model, preprocessing=grey_preset(32).to_dict())
    return root


def run_eval(argv):
    p = argparse.ArgumentParser(); add_evaluate_args(p)
    return evaluate_command(p.parse_args([str(a) for a in argv]))


def test_evaluate_writes_metrics_and_plots(tiny, capsys):
    out = tiny/'o1'
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', out, '--n-boot', '200', '--device', 'cpu']) == 0
    m = json.loads((out/'metrics.json').read_text())
    for k in ('accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auroc', 'average_precision', 'threshold', 'confusion_matrix'):
        assert k in m, k
    assert m['images'] == 24 and m['fractured'] == 12 and m['threshold'] == 0.5 and m['threshold_source'] == 'default'
    assert sum(map(sum, m['confusion_matrix'])) == 24 and m['trivial']['auroc'] == 0.5 and m['unreadable'] == []
    for f in ('confusion_matrix.png', 'roc.png', 'pr.png'): assert (out/f).stat().st_size > 2000
    # every figure can be recomputed from the per-image predictions
    import pandas as pd
    from torchmetrics.functional.classification import binary_auroc
    pr = pd.read_csv(out/'predictions.csv')
    assert len(pr) == 24 and set(pr.columns) == {'path', 'label', 'probability', 'call'}
    y, c = (pr.label == 'fractured').astype(int), (pr.call == 'fractured').astype(int)
    assert [[int(((y == 0) & (c == 0)).sum()), int(((y == 0) & (c == 1)).sum())], [int(((y == 1) & (c == 0)).sum()), int(((y == 1) & (c == 1)).sum())]] == m['confusion_matrix']
    assert abs(float(binary_auroc(torch.tensor(pr.probability.values), torch.tensor(y.values))) - m['auroc']) < 1e-4
    text = capsys.readouterr().out
    assert 'sensitivity' in text and 'trivial' in text and '95% CI' in text


def test_evaluate_threshold_options_and_split_all(tiny):
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tiny/'o2', '--split', 'all', '--n-boot', '0', '--threshold', '0.3']) == 0
    m = json.loads((tiny/'o2'/'metrics.json').read_text())
    assert m['images'] == 56 and m['threshold'] == 0.3 and m['ci95'] is None
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tiny/'o3', '--target-sensitivity', '0.8', '--n-boot', '0']) == 0
    m = json.loads((tiny/'o3'/'metrics.json').read_text())
    assert m['threshold_source'].startswith('validation')
    from fracture_course.learner import load_checkpoint
    from fracture_course.data import load_dataset
    from fracture_course.evaluate import predict_inputs
    model, info = load_checkpoint(tiny/'model.pt')
    v = load_dataset(tiny/'data').split('valid')
    x, ok, _ = load_inputs([o.path for o in v], grey_preset(32))
    vp = predict_inputs(model, x, grey_preset(32))
    assert operating_point(vp, torch.tensor([o.label for o in v]), m['threshold'])['sensitivity'] >= 0.8 - 1e-6


def test_evaluate_saved_threshold_is_used(tiny):
    model = create_model('simple_cnn', img_size=32, widths=(4, 8), hidden=8)
    ck = save_checkpoint(tiny/'thr.pt', model, preprocessing=grey_preset(32).to_dict(), metrics={'threshold': 0.42})
    assert run_eval([ck, '--data', tiny/'data', '--out', tiny/'o4', '--n-boot', '0']) == 0
    m = json.loads((tiny/'o4'/'metrics.json').read_text())
    assert m['threshold'] == 0.42 and m['threshold_source'] == 'saved in the checkpoint'


def test_evaluate_bad_inputs(tiny, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='does not exist'): run_eval([tmp_path/'missing.pt', '--data', tiny/'data'])
    (tmp_path/'junk.pt').write_bytes(b'garbage')
    with pytest.raises(ValueError, match='could not be read as a checkpoint'): run_eval([tmp_path/'junk.pt', '--data', tiny/'data'])
    with pytest.raises(FileNotFoundError, match='does not exist'): run_eval([tiny/'model.pt', '--data', tmp_path/'nodata'])
    with pytest.raises(ValueError, match='--threshold'): run_eval([tiny/'model.pt', '--data', tiny/'data', '--threshold', '2'])
    for n in ('1', '99', '-1'):  # a '95% interval' from a handful of resamples would be printed as if it meant something
        with pytest.raises(ValueError, match=f'--n-boot must be 0 .*or at least 100, got {n}'): run_eval([tiny/'model.pt', '--data', tiny/'data', '--n-boot', n])
    bare = save_checkpoint(tmp_path/'bare.pt', create_model('simple_cnn', img_size=32, widths=(4,), hidden=4))
    with pytest.raises(ValueError, match='preprocessing'): run_eval([bare, '--data', tiny/'data'])
    with pytest.raises(SystemExit): run_eval([tiny/'model.pt', '--threshold', '0.5', '--target-sensitivity', '0.9'])
    # a damaged image: named on stderr, the rest scored, exit status 1
    import shutil
    shutil.copytree(tiny/'data', tmp_path/'d')
    victim = tmp_path/'d'/'test'/'fractured'/'fra0.png'; victim.write_bytes(victim.read_bytes()[:40])
    capsys.readouterr()
    assert run_eval([tiny/'model.pt', '--data', tmp_path/'d', '--out', tmp_path/'o', '--n-boot', '0']) == 1
    err = capsys.readouterr().err
    assert 'fra0.png' in err and 'could not be read' in err
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert m['images'] == 23 and m['unreadable'][0]['path'].endswith('fra0.png')


def test_evaluate_scores_a_truncated_test_image_as_training_read_it_and_names_it(tiny, tmp_path, capsys):
    "The test set is the one training measured: a truncated file is scored on what decodes, named on stderr and under `truncated`"
    import shutil
    from fracture_course.learner import load_checkpoint
    from fracture_course.evaluate import predict_inputs
    from fracture_course.transforms import decode_resize
    shutil.copytree(tiny/'data', tmp_path/'d')
    victim = tmp_path/'d'/'test'/'not fractured'/'not0.png'; cut = victim.with_suffix('.jpg')
    Image.open(victim).resize((200, 200)).save(cut, quality=95); victim.unlink()
    data = cut.read_bytes(); cut.write_bytes(data[:len(data) * 2 // 3])
    capsys.readouterr()
    assert run_eval([tiny/'model.pt', '--data', tmp_path/'d', '--out', tmp_path/'o', '--n-boot', '0', '--split', 'all']) == 0
    assert f'warning: 1 truncated file(s) (not fractured 1) were scored on the part that decodes, as training read them: {cut} (all in metrics.json' in capsys.readouterr().err
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert m['images'] == 56 and m['unreadable'] == [] and m['truncated'] == [str(cut)]
    x, ok, failed = load_inputs([cut], grey_preset(32))  # by default (predict, the server): refused
    assert ok == [] and 'truncated' in failed[0][1]
    noted = []; x, ok, failed = load_inputs([cut], grey_preset(32), noted)
    assert ok == [0] and not failed and [p for p, _ in noted] == [str(cut)] and 'truncated' in noted[0][1]
    assert torch.equal(x[0], decode_resize(cut, grey_preset(32)))  # what training reads


@pytest.mark.filterwarnings('error::UserWarning')  # no meaningless ROC curve drawn (torchmetrics warns when one class is missing)
def test_evaluate_one_class_writes_null_for_undefined_metrics(tiny, tmp_path, capsys):
    "Only fractured images (a folder of positives): specificity and AUROC are undefined, written as null and printed n/a"
    rows = [f"{f},{f.parent.name},{'train' if split == 'train' else 'test'}" for split in ('train', 'test')
            for f in sorted((tiny/'data'/split).glob('*/*.png')) if split == 'train' or f.parent.name == 'fractured']
    (tmp_path/'positives.csv').write_text('path,label,split\n' + '\n'.join(rows) + '\n')
    assert run_eval([tiny/'model.pt', '--data', tmp_path/'positives.csv', '--out', tmp_path/'o', '--n-boot', '100']) == 0
    text = (tmp_path/'o'/'metrics.json').read_text()
    assert 'NaN' not in text  # strict JSON
    m = json.loads(text)
    assert m['images'] == m['fractured'] == 12 and m['specificity'] is None and m['auroc'] is None and m['sensitivity'] is not None
    assert m['ci95']['auroc'] == {'low': None, 'high': None} and m['ci95']['sensitivity']['low'] is not None
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith('auroc'))
    assert 'n/a' in line and (tmp_path/'o'/'roc.png').stat().st_size > 2000


def test_evaluation_report_matches_its_parts():
    "The report is the metrics, confusion matrix, bootstrap intervals and trivial classifier computed on their own"
    from fracture_course.evaluate import evaluation_report
    r = evaluation_report(P8, T8, 0.5, [0, 0, 1], n_boot=100, seed=1)
    assert {k: r[k] for k in METRIC_NAMES} == evaluation_metrics(P8, T8, 0.5)
    assert r['confusion_matrix'] == confusion_matrix(P8, T8, 0.5).tolist() and r['images'] == 8 and r['fractured'] == 4
    ci = bootstrap_ci(P8, T8, 0.5, 100, seed=1)
    assert r['ci95']['auroc'] == {'low': ci.loc['auroc', 'low'], 'high': ci.loc['auroc', 'high']}
    assert r['trivial']['predicts'] == 'not fractured' and r['trivial']['sensitivity'] == 0
    assert evaluation_report(P8, T8, 0.5, [1], n_boot=0)['ci95'] is None


def test_load_inputs_reports_failures_in_order(tiny, tmp_path):
    good = sorted((tiny/'data'/'test'/'fractured').glob('*.png'))[:2]
    (tmp_path/'empty.png').write_bytes(b'')
    x, ok, failed = load_inputs([good[0], tmp_path/'empty.png', tmp_path/'nope.png', good[1]], grey_preset(32))
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.uint8 and ok == [0, 3]
    assert [Path(p).name for p, _ in failed] == ['empty.png', 'nope.png'] and 'empty' in failed[0][1]


def test_cli_evaluate_when_wired(tiny, tmp_path):
    from fracture_course.cli import build_parser
    if 'evaluate' not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip('fracture-course evaluate is not wired into the CLI yet')
    r = subprocess.run([CLI, 'evaluate', str(tiny/'model.pt'), '--data', str(tiny/'data'), '--out', str(tmp_path/'o'), '--n-boot', '0'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'o'/'metrics.json').is_file() and 'earlier evaluation' not in r.stderr
    r = subprocess.run([CLI, 'evaluate', str(tiny/'model.pt'), '--data', str(tiny/'data'), '--out', str(tmp_path/'o'), '--n-boot', '0', '--threshold', '0.3'],
                       capture_output=True, text=True)
    assert r.returncode == 0 and f"note: {tmp_path/'o'} holds an earlier evaluation; this one replaces" in r.stderr, r.stderr
    r = subprocess.run([CLI, 'evaluate', str(tmp_path/'missing.pt'), '--data', str(tiny/'data')], capture_output=True, text=True)
    assert r.returncode == 1 and 'missing.pt' in r.stderr


def test_evaluate_checks_its_output_folder_first_and_reports_skipped_rows(tiny, tmp_path, capsys):
    "--out that cannot be a folder fails before scoring (and a missing checkpoint makes no folder); a manifest row whose file is missing is named and recorded"
    (tmp_path/'afile').write_text('x')
    with pytest.raises(ValueError, match='choose another --out'): run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tmp_path/'afile'])
    with pytest.raises(FileNotFoundError): run_eval([tmp_path/'gone'/'model.pt', '--data', tiny/'data'])
    assert not (tmp_path/'gone').exists()
    rows = [f"{f},{f.parent.name},{split}" for split in ('train', 'test') for f in sorted((tiny/'data'/split).glob('*/*.png'))]
    rows.append(f"{tmp_path/'missing.png'},fractured,test")
    (tmp_path/'m.csv').write_text('path,label,split\n' + '\n'.join(rows) + '\n')
    capsys.readouterr()
    assert run_eval([tiny/'model.pt', '--data', tmp_path/'m.csv', '--out', tmp_path/'o', '--n-boot', '0']) == 0
    assert 'missing.png' in capsys.readouterr().err
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert m['images'] == 24 and [Path(s['path']).name for s in m['skipped']] == ['missing.png']


def test_a_refused_evaluation_leaves_no_empty_folder(tiny, tmp_path):
    "When no image can be scored, evaluate fails with the reason and leaves no empty --out folder (nor the default eval-test)"
    import shutil
    data = tmp_path/'data'; shutil.copytree(tiny/'data', data)
    for f in (data/'test').rglob('*.png'): f.write_bytes(b'not a png')
    out = tmp_path/'runs'/'eval'
    with pytest.raises(ValueError, match=r'has no test split .*; 24 file\(s\) could not be opened and were left out, e.g. .*test.*not an image'):
        run_eval([tiny/'model.pt', '--data', data, '--out', out, '--n-boot', '0'])
    assert not out.exists() and not out.parent.exists()
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', out, '--n-boot', '0']) == 0 and (out/'metrics.json').is_file()


@pytest.mark.parametrize('op, says', [({'threshold': 31.0}, 'threshold is 31.0; it must be a probability between 0 and 1'),
                                      ({'threshold': 0.4, 'temperature': float('nan')}, 'temperature is nan; it must be a positive number'),
                                      ({'threshold': 0.4, 'temperature': -1.0}, 'temperature is -1.0'),
                                      ({'threshold': 0.4, 'temperature': 0}, 'temperature is 0;')])
def test_a_damaged_operating_point_is_refused_everywhere(tiny, tmp_path, op, says):
    "A threshold in percent, or a temperature that is NaN, 0 or negative, would change every call silently: evaluate, predict, export and serve refuse it"
    import shutil
    from fracture_course.learner import update_checkpoint
    ck = tmp_path/'bad.pt'; shutil.copy(tiny/'model.pt', ck)
    update_checkpoint(ck, operating_point={'source': 'a test', **op})
    with pytest.raises(ValueError, match=f"bad.pt: the saved {says}"): run_eval([ck, '--data', tiny/'data', '--out', tmp_path/'o', '--n-boot', '0'])
    img = str(next((tiny/'data'/'test'/'fractured').glob('*.png')))
    r = subprocess.run([CLI, 'predict', str(ck), img], capture_output=True, text=True)
    assert r.returncode == 1 and says in r.stderr and 'Traceback' not in r.stderr, r.stderr
    from fracture_course.deploy import Predictor, export_onnx
    for make in (lambda: export_onnx(ck, tmp_path/'m.onnx'), lambda: Predictor(ck)):
        with pytest.raises(ValueError, match=says): make()
    assert not (tmp_path/'o').exists() and not (tmp_path/'m.onnx').exists()


def test_probabilities_outside_0_1_are_refused_not_taken_for_logits():
    "torchmetrics applies a sigmoid when any value lies outside 0..1: one NaN (or logits passed by mistake) would change every figure"
    from fracture_course.evaluate import evaluation_report
    t = torch.tensor([0, 1, 1, 0])
    for bad in (torch.tensor([0.2, 0.9, float('nan'), 0.1]), torch.tensor([-2.0, 3.0, 1.5, -0.5])):
        with pytest.raises(ValueError, match='probabilities are NaN or outside 0..1'): evaluation_metrics(bad, t)
        with pytest.raises(ValueError, match='softmax'): evaluation_report(bad, t, 0.5, [0, 1], n_boot=0)
    assert evaluation_metrics(torch.tensor([0.0, 1.0, 0.7, 0.2]), t)['accuracy'] == 1.0

def test_labels_as_lists_or_class_names_are_taken_and_wrong_ones_named():
    "Plain lists, numpy arrays and class names work as labels everywhere; a label that is no class, or one too few, is named"
    from fracture_course.evaluate import evaluation_report
    p, t = [0.2, 0.9, 0.6, 0.1], torch.tensor([0, 1, 1, 0])
    want = evaluation_metrics(torch.tensor(p), t)
    for labels in ([0, 1, 1, 0], np.array([0, 1, 1, 0]), ['not fractured', 'Fractured', 'fracture', 'normal'], [False, True, True, False]):
        assert evaluation_metrics(p, labels) == want
        assert torch.equal(confusion_matrix(p, labels), confusion_matrix(torch.tensor(p), t))
        assert evaluation_report(torch.tensor(p), labels, 0.5, [0, 1], n_boot=0)['fractured'] == 2
    assert bootstrap_ci(p, ['fractured'] * 2 + ['not fractured'] * 2, n_boot=20).shape == (len(METRIC_NAMES), 3)
    fns = [evaluation_metrics, confusion_matrix, classification_report, bootstrap_ci, reliability_table, top_losses,
           lambda p, t: group_metrics(p, t, ['a'] * 4), lambda p, t: threshold_for_sensitivity(p, t, 0.9),
           lambda p, t: nll(torch.tensor([[0., 1.]] * 4), t), lambda p, t: fit_temperature(torch.tensor([[0., 1.]] * 4), t)]
    for fn in fns:
        with pytest.raises(ValueError, match="label 'maybe' is not a class name"): fn(p, ['fractured', 'maybe', 'normal', 'normal'])
        with pytest.raises(ValueError, match=r'1 of 4 labels are not 0 or 1 \(the first: 2\)'): fn(p, [0, 2, 1, 0])
        with pytest.raises(ValueError, match='4 probabilities but 3 labels'): fn(p, [0, 1, 1])

def test_items_take_text_paths_and_class_names_and_refuse_other_labels():
    from fracture_course.data import Item
    it = Item('xrays/a.png', 'Fractured', 'test')
    assert it.path == Path('xrays/a.png') and it.label == 1 and it.label_name == 'fractured'
    assert Item('b.png', np.int64(0)).label == 0 and type(Item('b.png', np.int64(0)).label) is int
    for bad in ('broken bone', 2, -1, 0.5, None):
        with pytest.raises(ValueError, match=r"b\.png: label .* is not a class; give 1 \(fractured\) or 0"): Item('b.png', bad)

def test_a_threshold_chosen_on_the_scored_images_is_flagged(tiny, tmp_path, capsys):
    "--target-sensitivity (or a checkpoint's threshold from this dataset's validation split) reported on valid or all: optimistic, said so"
    from fracture_course.learner import update_checkpoint
    import shutil
    says = "the threshold was chosen on data's validation split, which is among the images scored here"
    for split, flagged in (('valid', True), ('all', True), ('test', False)):
        assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tmp_path/split, '--split', split,
                         '--target-sensitivity', '0.9', '--n-boot', '0']) == 0
        assert json.loads((tmp_path/split/'metrics.json').read_text())['threshold_chosen_on_these_images'] is flagged
        assert (says in capsys.readouterr().err) is flagged
    for where, flagged in (('data', True), ('other', False)):
        ck = shutil.copy(tiny/'model.pt', tmp_path/f'{where}.pt')
        update_checkpoint(ck, operating_point={'threshold': 0.4, 'temperature': 1.0, 'source': f'validation split of {where} (20 images), sensitivity >= 0.9'})
        assert run_eval([ck, '--data', tiny/'data', '--out', tmp_path/f'o-{where}', '--split', 'valid', '--n-boot', '0']) == 0
        assert json.loads((tmp_path/f'o-{where}'/'metrics.json').read_text())['threshold_chosen_on_these_images'] is flagged
        assert (says in capsys.readouterr().err) is flagged


def test_evaluate_scores_small_images_as_training_read_them(tiny, tmp_path):
    "predict and serve refuse images under 32 px; evaluate measures the dataset training measured, so it scores them"
    import shutil
    data = shutil.copytree(tiny/'data', tmp_path/'data')
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(data/'test'/'fractured'/'small.png')
    assert run_eval([tiny/'model.pt', '--data', data, '--out', tmp_path/'o', '--n-boot', '0']) == 0
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert m['images'] == 25 and m['unreadable'] == []


def _unsplit(root, n=30):
    "Class folders without a split (as FracAtlas ships): the split comes from the seed"
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(1)
    for c in ('fractured', 'not fractured'):
        (root/c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 80, (40, 40), dtype=np.uint8)
            if c == 'fractured': a[18:22, 5:35] = 250
            Image.fromarray(a).save(root/c/f'{c[:3]}{i}.png')
    return root

def _record_training(ck, data, seed:int):
    "Write into checkpoint `ck` what `train` records of the data it trained on (`trained_on` of a run summary)"
    from fracture_course.data import split_digest
    from fracture_course.learner import update_checkpoint
    from fracture_course.train import trained_on
    update_checkpoint(ck, trained_on=trained_on({'dataset': data.name, 'data_root': str(data.root), 'data_source': data.source, 'settings': {'seed': seed},
                                                 'counts': data.counts(), 'split_digest': split_digest(data), 'files_digest': split_digest(data, with_splits=False)}))

def test_evaluate_scores_the_test_split_the_model_was_trained_with(tiny, tmp_path, capsys):
    "A model trained with seed 7 on an unsplit dataset: evaluate uses that dataset and seed by default, and warns when told otherwise"
    from fracture_course.data import load_dataset, split_digest
    root = _unsplit(tmp_path/'unsplit')
    data7 = load_dataset(root, seed=7)
    assert split_digest(data7) != split_digest(load_dataset(root, seed=42))  # another seed, another split
    ck = tmp_path/'seed7.pt'; ck.write_bytes((tiny/'model.pt').read_bytes())
    _record_training(ck, data7, 7)
    # no --data, no --seed (and the settings point elsewhere: the built-in data, seed 42): the model's own test split
    assert run_eval([ck, '--out', tmp_path/'own', '--n-boot', '0', '--device', 'cpu']) == 0
    m = json.loads((tmp_path/'own'/'metrics.json').read_text())
    assert m['data'] == str(root) and m['split_seed'] == 7 and m['training_data_warning'] is None
    assert m['images'] == len(data7.split('test')) and m['trained_on']['seed'] == 7
    capsys.readouterr()
    # the split of another seed holds training images: scored, but said loudly
    assert run_eval([ck, '--seed', '42', '--out', tmp_path/'s42', '--n-boot', '0', '--device', 'cpu']) == 0
    err = capsys.readouterr().err
    assert 'may have been trained on' in err and '--seed 7' in err
    assert 'may have been trained on' in json.loads((tmp_path/'s42'/'metrics.json').read_text())['training_data_warning']
    # another dataset: an external check, named as such
    assert run_eval([ck, '--data', tiny/'data', '--out', tmp_path/'other', '--n-boot', '0', '--device', 'cpu']) == 0
    assert 'the model was trained on other images: unsplit' in capsys.readouterr().err
    # every image scored ('all'): the split does not matter, nothing to warn about
    assert run_eval([ck, '--seed', '42', '--split', 'all', '--out', tmp_path/'all', '--n-boot', '0', '--device', 'cpu']) == 0
    assert json.loads((tmp_path/'all'/'metrics.json').read_text())['training_data_warning'] is None
    # the same files under another name (a renamed copy): the same split, nothing to warn about
    import shutil
    shutil.copytree(root, tmp_path/'renamed')
    assert run_eval([ck, '--data', tmp_path/'renamed', '--out', tmp_path/'ren', '--n-boot', '0', '--device', 'cpu']) == 0
    assert json.loads((tmp_path/'ren'/'metrics.json').read_text())['training_data_warning'] is None

def test_a_model_trained_from_a_manifest_is_evaluated_on_that_manifest(tiny, tmp_path, monkeypatch):
    "trained_on keeps the path train was given (the CSV itself, made absolute), so evaluate reads the same rows and split"
    from fracture_course.data import load_dataset
    root = _unsplit(tmp_path/'ds')
    rows = [f'{c}/{p.name},{c}' for c in ('fractured', 'not fractured') for p in sorted((root/c).iterdir())]
    (root/'labels.csv').write_text('path,label\n' + '\n'.join(rows) + '\n')
    monkeypatch.chdir(tmp_path)
    data = load_dataset('ds/labels.csv', seed=3)  # a relative path, as typed
    assert data.source == str(root/'labels.csv')
    ck = tmp_path/'m.pt'; ck.write_bytes((tiny/'model.pt').read_bytes())
    _record_training(ck, data, 3)
    monkeypatch.chdir(tiny)  # run from elsewhere
    assert run_eval([ck, '--out', tmp_path/'e', '--n-boot', '0', '--device', 'cpu']) == 0
    m = json.loads((tmp_path/'e'/'metrics.json').read_text())
    assert m['training_data_warning'] is None and m['split_seed'] == 3 and m['images'] == len(data.split('test'))

def test_evaluate_and_audit_need_no_device_to_read_the_seed(tiny, tmp_path, monkeypatch, capsys):
    "A settings device this machine lacks stops training, not an evaluation on the CPU or an audit"
    monkeypatch.setenv('FRACTURE_DEVICE', 'cuda:99')
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tmp_path/'e', '--n-boot', '0', '--device', 'cpu']) == 0
    from fracture_course.data import add_audit_args, audit_command
    p = argparse.ArgumentParser(); add_audit_args(p)
    assert audit_command(p.parse_args([str(tiny/'data')])) == 0

def test_every_metric_function_refuses_what_is_not_a_probability_and_says_undefined_as_nan():
    "The probe's cases: NaN or logits were counted silently by some functions; an undefined F1 read 0; edge cases crashed late"
    from fracture_course.evaluate import confusion_matrix, evaluation_metrics, expected_calibration_error, fit_temperature, item_losses, weighted_metrics
    y = torch.tensor([1, 0, 1, 0])
    for bad in (torch.tensor([float('nan'), .2, .9, .1]), torch.tensor([2., -.5, .9, .1])):
        for f in (lambda p: confusion_matrix(p, y), lambda p: threshold_for_sensitivity(p, y, .9), lambda p: expected_calibration_error(p, y),
                  lambda p: classification_report(p, y), lambda p: weighted_metrics(p, y, torch.ones(1, 4)), lambda p: item_losses(p, y)):
            with pytest.raises(ValueError, match='NaN or outside 0..1'): f(bad)
    with pytest.raises(ValueError, match=r'shape \[N\]; got \[4, 2\]: take probs\[:, 1\]'): evaluation_metrics(torch.rand(4, 2), y)
    with pytest.raises(ValueError, match='at least one image'): expected_calibration_error([], [])
    with pytest.raises(ValueError, match='n_bins must be at least 1'): expected_calibration_error([.5], [1], n_bins=0)
    with pytest.raises(ValueError, match='coverage, a fraction such as 0.95; got 95'): bootstrap_ci(torch.tensor([.1, .9]), torch.tensor([0, 1]), level=95)
    # F1 is undefined (NaN) with no fracture and no fracture call, as sensitivity and precision are; a perfect model's interval stays at 1
    assert math.isnan(evaluation_metrics([.1, .2], [0, 0])['f1'])
    assert bootstrap_ci(torch.tensor([.1, .2, .9]), torch.tensor([0, 0, 1]), n_boot=500).loc['f1', ['low', 'high']].tolist() == [1.0, 1.0]
    # a fracture scored exactly 0 cannot be called at any threshold of 0 or more: said, and the threshold stays a probability
    with pytest.warns(EvaluationWarning, match='1 of 2 fractures have probability 0: no threshold reaches sensitivity 1'):
        assert threshold_for_sensitivity([.9, .3, 0., .5], [1, 0, 1, 0], 1.0) == 0.0
    # a class with no images: its recall and F1 are undefined, and the macro average is over the defined ones
    rep = classification_report([.9, .8], [1, 1])
    assert math.isnan(rep.loc['not fractured', 'recall']) and rep.loc['macro average', 'recall'] == 1.0
    for logits, targets, msg in ((torch.zeros(0, 2), torch.zeros(0), r'logits \[N, 2\] of at least one image'),
                                 (torch.tensor([[0., float('nan')], [0, 1]]), torch.tensor([1, 0]), 'NaN or infinite'),
                                 (torch.tensor([[0., 1], [0, 2]]), torch.tensor([1, 1]), 'needs both classes')):
        with pytest.raises(ValueError, match=msg): fit_temperature(logits, targets)
    with pytest.warns(EvaluationWarning, match='separate the classes perfectly'): fit_temperature(torch.tensor([[0., 3], [0, -3]]), torch.tensor([1, 0]))

def test_evaluate_refuses_a_negative_seed_before_scoring(tmp_path):
    p = argparse.ArgumentParser(); add_evaluate_args(p)
    with pytest.raises(ValueError, match='--seed must be 0 or more, got -1'): evaluate_command(p.parse_args([str(tmp_path/'m.pt'), '--seed', '-1']))
    args = p.parse_args([str(tmp_path/'m.pt'), '--split', 'val'])  # the folders' name is taken for the split's
    with pytest.raises(FileNotFoundError): evaluate_command(args)
    assert args.split == 'valid'

def test_the_trivial_classifier_says_whose_majority_it_predicts(tiny, tmp_path, capsys):
    assert run_eval([tiny/'model.pt', '--data', tiny/'data', '--out', tmp_path/'a', '--n-boot', '0', '--device', 'cpu']) == 0
    assert json.loads((tmp_path/'a'/'metrics.json').read_text())['trivial_majority_of'] == 'the training split'
    only_test = bar_xrays(tmp_path/'only_test', (('test', 12),))
    assert run_eval([tiny/'model.pt', '--data', only_test, '--out', tmp_path/'b', '--n-boot', '0', '--device', 'cpu']) == 0
    assert 'no training split: the trivial classifier predicts the majority of the images scored' in capsys.readouterr().err
    assert json.loads((tmp_path/'b'/'metrics.json').read_text())['trivial_majority_of'].startswith('the images scored')

def test_json_ready_turns_every_non_finite_number_into_null():
    from fracture_course.evaluate import _json_ready
    import json
    o = _json_ready({'precision': float('inf'), 'x': [float('-inf'), float('nan'), 0.5], 'p': Path('a/b')})
    assert o == {'precision': None, 'x': [None, None, 0.5], 'p': 'a/b'} and json.loads(json.dumps(o, allow_nan=False)) == o
