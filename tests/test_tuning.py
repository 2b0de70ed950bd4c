"Tests of fracture_course.tuning (experiments, Optuna search) and of EnhancedCNN in fracture_course.models"
from functools import partial

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from torch import nn

from fracture_course.config import get_config
from fracture_course.data import load_dataset
from fracture_course.learner import load_checkpoint, save_checkpoint
from fracture_course.models import EnhancedCNN, SimpleCNN, create_model
from fracture_course.transforms import get_dls, grey_preset
from fracture_course.tuning import (MODEL_KEYS, TRIAL_ATTRS, known_trial, PruningCB, make_objective, plot_study, preload, remake_dls,
                                    run_experiment, run_study, search_space, subsample, train_eval_loader)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SIZE = 16
TINY_SPACE = partial(search_space, base_widths=(2, 4), n_stages=2)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    "A dataset of 16x16 PNGs in the split-folder layout: 24 train, 8 valid, 8 test images (half fractured)"
    root = tmp_path_factory.mktemp('tiny')
    rng = np.random.default_rng(0)
    for split, n in (('train', 24), ('val', 8), ('test', 8)):
        for i in range(n):
            label = i % 2
            img = rng.integers(60, 120, (SIZE, SIZE), dtype=np.uint8)
            img[:, 6:10] = 200  # a bone
            if label: img[7:9, 6:10] = 30  # a crack across it
            d = root / split / ('fractured' if label else 'not fractured')
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f'{i}.png')
    return load_dataset(root, seed=0)


@pytest.fixture(scope='module')
def tiny_cfg():
    return get_config('quick', image_size=SIZE, batch_size=8, epochs=2, seed=3, device='cpu', num_workers=0)


@pytest.fixture(scope='module')
def tiny_dls(tiny_data):
    return get_dls(tiny_data, grey_preset(SIZE), aug='none', bs=8, seed=0)


class Forbidden:
    "A stand-in loader that fails if anything iterates it (the test split must never be used in tuning)"
    batch_size = 8
    def __iter__(self): raise AssertionError('the test split was used')
    def __len__(self): return 1


class Counting:
    "Wraps a loader and counts full passes over it"
    def __init__(self, dl): self.dl, self.passes = dl, 0
    def __iter__(self):
        self.passes += 1
        return iter(self.dl)
    def __len__(self): return len(self.dl)


# --- EnhancedCNN ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('in_channels,img_size,widths', [(1, 32, (4, 8)), (3, 64, (4, 8, 16)), (1, 50, (2, 4, 8))])
def test_enhanced_cnn_shapes(in_channels, img_size, widths):
    m = create_model('enhanced_cnn', in_channels=in_channels, img_size=img_size, widths=widths, hidden=16)
    assert isinstance(m, SimpleCNN) and m.arch == 'enhanced_cnn'
    assert m(torch.randn(3, in_channels, img_size, img_size)).shape == (3, 2)
    assert m.n_features == widths[-1] * (img_size // 2**len(widths))**2
    with pytest.raises(ValueError, match='expects a batch'): m(torch.randn(3, in_channels, img_size + 2, img_size))


def test_enhanced_cnn_dropout_and_batch_norm():
    m = EnhancedCNN(img_size=32, widths=(4, 8), hidden=16, dropout=0.7)
    assert [d.p for d in m.modules() if isinstance(d, nn.Dropout)] == [0.7, 0.7]
    assert sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) == 2
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))  # batch norm makes the bias redundant
    x = torch.randn(4, 1, 32, 32)
    m.train(); assert not torch.equal(m(x), m(x))
    m.eval(); assert torch.equal(m(x), m(x))
    plain = EnhancedCNN(img_size=32, widths=(4, 8), hidden=16, dropout=0.0, batch_norm=False)
    assert not any(isinstance(b, nn.BatchNorm2d) for b in plain.modules())
    assert all(c.bias is not None for c in plain.modules() if isinstance(c, nn.Conv2d))
    plain.train(); assert torch.equal(plain(x), plain(x))  # no dropout, no batch statistics: deterministic
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match='dropout'): EnhancedCNN(dropout=bad)


def test_enhanced_cnn_checkpoint_round_trip(tmp_path):
    m = create_model('enhanced_cnn', img_size=32, widths=(4, 8), hidden=16, dropout=0.3).eval()
    path = save_checkpoint(tmp_path / 'e.pt', m)
    m2, info = load_checkpoint(path)
    x = torch.randn(2, 1, 32, 32)
    assert info['arch'] == 'enhanced_cnn' and info['arch_kwargs']['dropout'] == 0.3
    assert torch.equal(m(x), m2(x))


# --- data helpers --------------------------------------------------------------------------------------------------

def test_subsample(tiny_data):
    small = subsample(tiny_data, 10, seed=1)
    c, c_all = small.counts(), tiny_data.counts()
    assert sum(c['train'].values()) == 10 and c['train']['fractured'] == 5
    assert c['valid'] == c_all['valid'] and c['test'] == c_all['test']
    assert subsample(tiny_data, 10, seed=1).items == small.items and subsample(tiny_data, 10, seed=2).items != small.items
    assert len(tiny_data.split('train')) == 24  # the original is untouched
    assert subsample(tiny_data, 24).items == tiny_data.items
    for bad in (0, 25, -1):
        with pytest.raises(ValueError, match='n_train'): subsample(tiny_data, bad)


def test_loaders(tiny_dls):
    tl = train_eval_loader(tiny_dls)
    assert len(tl.dataset) == 24 and torch.equal(next(iter(tl))[0], next(iter(tl))[0])
    d2 = remake_dls(tiny_dls, bs=4, aug='heavy', seed=0)
    assert d2.train.batch_size == 4 and d2.valid is tiny_dls.valid and d2.train.dataset.cache is tiny_dls.train.dataset.cache
    assert tiny_dls.train.batch_size == 8
    with pytest.raises(ValueError, match='batch size'): remake_dls(tiny_dls, bs=-1)
    with pytest.raises(ValueError, match='batch size must be at least 1, got 0'): remake_dls(tiny_dls, bs=0)
    with pytest.raises(ValueError, match='augmentation level'): remake_dls(tiny_dls, aug='extreme')
    pv = preload(tiny_dls.valid)
    assert all(torch.equal(a, b) and torch.equal(y1, y2) for (a, y1), (b, y2) in zip(tiny_dls.valid, pv))


def test_run_experiment_never_touches_test(tiny_dls):
    dls = remake_dls(tiny_dls)
    dls.test = Forbidden()
    build = lambda: create_model('enhanced_cnn', img_size=SIZE, widths=(2, 4), hidden=8)
    row, learn = run_experiment('tiny', build, dls, 2, lr=1e-2, seed=0, device='cpu')
    assert row['epochs'] == 2 == len(learn.history)
    assert row['gap'] == pytest.approx(row['valid_loss'] - row['train_loss'])
    assert row['valid_loss'] == pytest.approx(learn.history[-1]['valid_loss'], rel=1e-5)
    assert {'valid_accuracy', 'valid_sensitivity', 'valid_specificity', 'valid_auroc', 'seconds', 'params'} <= set(row)
    row2, _ = run_experiment('tiny', build, dls, 2, lr=1e-2, seed=0, device='cpu')
    assert row2['valid_loss'] == row['valid_loss']  # seeded: the same run twice


# --- the search ----------------------------------------------------------------------------------------------------

def test_search_space_ranges_and_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    settings = []
    study.optimize(lambda t: settings.append(search_space(t)) or 0.0, n_trials=40)
    d = study.trials[0].distributions
    assert d['base_width'].choices == (8, 16, 32) and d['hidden'].choices == (64, 128, 256)
    assert d['batch_size'].choices == (16, 32, 64)
    assert (d['dropout'].low, d['dropout'].high, d['dropout'].step) == (0.0, 0.7, 0.1)
    assert d['lr'].log and (d['lr'].low, d['lr'].high) == (1e-4, 1e-2)
    assert d['weight_decay'].log and (d['weight_decay'].low, d['weight_decay'].high) == (1e-5, 1e-1)
    for s in settings:
        assert set(s) == {*MODEL_KEYS, 'lr', 'batch_size', 'weight_decay'}
        w = s['widths']; assert len(w) == 3 and w[1] == 2 * w[0] and w[2] == 4 * w[0]
        assert 0 <= s['dropout'] <= 0.7 and 1e-4 <= s['lr'] <= 1e-2
    fixed = search_space(optuna.trial.FixedTrial(study.trials[5].params))
    assert fixed == settings[5]  # a study's parameters turn back into the same settings
    assert TINY_SPACE(optuna.trial.FixedTrial(dict(study.trials[0].params, base_width=4)))['widths'] == (4, 8)


def test_objective_uses_valid_split_and_reports_each_epoch(tiny_dls, tiny_cfg):
    dls = remake_dls(tiny_dls)
    dls.valid, dls.test = Counting(tiny_dls.valid), Forbidden()
    objective = make_objective(dls, tiny_cfg, space=TINY_SPACE)
    assert objective.direction == 'minimize'
    study = run_study(objective, n_trials=2, seed=0)
    assert dls.valid.passes == 2 * tiny_cfg.epochs  # one validation pass per epoch per trial
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [1, 2] and t.intermediate_values[2] == t.value
        assert t.user_attrs['valid_loss'] == t.value and set(t.user_attrs) == set(TRIAL_ATTRS)
    # a trial made from a run outside the study (chapter 6's hand-set network) keeps the same record, so the table has no holes
    known = known_trial(TINY_SPACE, study.trials[0].params, objective.learners[0])
    assert set(known.user_attrs) == set(TRIAL_ATTRS) and known.value == study.trials[0].value
    assert make_objective(dls, tiny_cfg, monitor='valid_auroc').direction == 'maximize'
    with pytest.raises(ValueError, match='epoch'): make_objective(dls, tiny_cfg, epochs=-1)


def test_objective_from_data(tiny_data, tiny_cfg):
    objective = make_objective(tiny_data, tiny_cfg, epochs=1, space=TINY_SPACE, aug='flip')
    assert len(objective.dls.train.dataset) == 24 and objective.dls.preset.size == SIZE
    assert objective.dls.test is None  # the search never even loads the test split
    assert run_study(objective, n_trials=1, seed=0).trials[0].state == optuna.trial.TrialState.COMPLETE


def test_pruning(tiny_dls, tiny_cfg):
    objective = make_objective(tiny_dls, tiny_cfg, epochs=3, space=TINY_SPACE)
    study = run_study(objective, n_trials=2, seed=0, pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    for t in study.trials:  # every validation loss is above 0, so every trial stops after its first epoch
        assert t.state == optuna.trial.TrialState.PRUNED and list(t.intermediate_values) == [1]
    default = run_study(lambda t: 1.0, n_trials=1, seed=0)
    assert isinstance(default.pruner, optuna.pruners.MedianPruner)


def test_run_study_takes_a_sampler_and_keeps_known_trials():
    "A grid sampler (chapter 6's quick search) visits each grid point once, after the known trial; TPE is the default"
    space = lambda t: {'wd': t.suggest_float('wd', 1e-5, 1e-1, log=True)}
    known = optuna.trial.create_trial(params={'wd': 1e-4}, distributions={'wd': optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}, value=0.5)
    grid = optuna.samplers.GridSampler({'wd': [1e-3, 3e-3, 1e-2]}, seed=0)
    study = run_study(lambda t: abs(space(t)['wd'] - 3e-3), n_trials=3, seed=0, sampler=grid, known=[known], pruner=optuna.pruners.NopPruner())
    assert study.sampler is grid and study.trials[0].params == {'wd': 1e-4}
    assert sorted(t.params['wd'] for t in study.trials[1:]) == [1e-3, 3e-3, 1e-2]
    assert study.best_trial.params == {'wd': 3e-3} and study.best_trial.number != 0
    assert isinstance(run_study(lambda t: 1.0, n_trials=1, seed=0).sampler, optuna.samplers.TPESampler)


def test_pruning_cb_checks_its_monitor():
    study = optuna.create_study()
    cb = PruningCB(study.ask(), monitor='valid_nothing')
    learn = type('L', (), {'history': [{'epoch': 1, 'valid_loss': 0.5}]})()
    with pytest.raises(ValueError, match='valid_nothing'): cb.after_epoch(learn)


def test_study_is_reproducible(tiny_dls, tiny_cfg):
    "Same seed: same parameters and the same scores; another seed: other parameters"
    run = lambda seed: run_study(make_objective(tiny_dls, tiny_cfg, space=TINY_SPACE), n_trials=2, seed=seed)
    a, b, c = run(7), run(7), run(8)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]
    assert [t.intermediate_values for t in a.trials] == [t.intermediate_values for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_run_study_checks_arguments():
    with pytest.raises(ValueError, match='n_trials'): run_study(lambda t: 0.0, n_trials=0)
    study = run_study(lambda t: t.suggest_float('x', 0, 1), n_trials=3, seed=0, direction='maximize')
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 3


def test_plot_study_small_studies(capsys):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    one = run_study(lambda t: t.suggest_float('x', 0, 1), n_trials=1, seed=0)
    assert len(plot_study(one)) == 2 and '1 completed trial(s) varied nothing' in capsys.readouterr().out
    many = run_study(lambda t: t.suggest_float('x', 0, 1) + t.suggest_float('y', 0, 0.1), n_trials=6, seed=0)
    assert len(plot_study(many)) == 3
    # a setting that never changed explains nothing: with one setting varied, no importance plot (Optuna gave constants a share)
    grid = run_study(lambda t: t.suggest_float('x', 0, 1) + t.suggest_float('y', 0, 1), n_trials=3,
                     sampler=optuna.samplers.GridSampler({'x': [0.1, 0.5, 0.9], 'y': [0.3]}, seed=0))
    capsys.readouterr()
    assert len(plot_study(grid)) == 2 and '3 completed trial(s) varied x.' in capsys.readouterr().out
    plt.close('all')
