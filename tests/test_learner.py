"The Learner: determinism, callbacks, metrics, freezing, LR finder and one-cycle, checkpoints and their errors."
import math, pickle
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fracture_course
from fracture_course.config import seed_everything
from fracture_course.learner import (Callback, CancelFitException, EarlyStoppingCB, GradClipCB, Learner, LearnerWarning, LRFinderWarning,
                                     OneCycleCB, lr_suggestion,
                                     SaveBestCB, binary_metrics, count_params, freeze, load_checkpoint, param_groups,
                                     plot_history, read_checkpoint, save_checkpoint, trainable, unfreeze)
from fracture_course.models import MODELS, create_model

SIZE = 16





def toy_dls(n_train=96, n_valid=48, bs=16, seed=0, shift=1.0):
    "Learnable toy data: class 1 images are brighter in the top-left quarter"
    g = torch.Generator().manual_seed(seed)
    def make(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 1, SIZE, SIZE, generator=g)
        x[:, :, :SIZE // 2, :SIZE // 2] += shift * y.view(-1, 1, 1, 1)
        return TensorDataset(x, y)
    return SimpleNamespace(train=DataLoader(make(n_train), batch_size=bs, shuffle=True),
                           valid=DataLoader(make(n_valid), batch_size=bs * 2))


def tiny_model(**kw): return create_model('simple_cnn', img_size=SIZE, widths=(4, 4), hidden=8, **kw)


def learner(dls=None, model=None, **kw):
    return Learner(model or tiny_model(), dls or toy_dls(), progress=False, device='cpu', **kw)


# --- determinism and history -------------------------------------------------------------------

def run_once(seed):
    seed_everything(seed)
    learn = learner()
    learn.fit_one_cycle(3, 3e-3, cbs=[GradClipCB(1.)])
    return [{k: v for k, v in row.items() if k != 'time'} for row in learn.history], learn


def test_same_seed_same_history_on_cpu():
    (h1, l1), (h2, l2) = run_once(7), run_once(7)
    assert len(h1) == 3 and h1 == h2
    assert all(torch.equal(a, b) for a, b in zip(l1.model.parameters(), l2.model.parameters()))
    assert run_once(8)[0] != h1  # the seed matters, so the equality above means something


def test_history_rows_and_dataframe():
    learn = learner().fit(2)
    row = learn.history[-1]
    assert list(row)[:3] == ['epoch', 'train_loss', 'valid_loss'] and list(row)[-2:] == ['lr', 'time']
    for split in ('train', 'valid'):
        for m in ('accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auroc'): assert f'{split}_{m}' in row
    assert [r['epoch'] for r in learn.history] == [1, 2] and row['time'] > 0 and row['lr'] == 1e-3
    learn.fit(1)
    assert learn.history_df['epoch'].tolist() == [1, 2, 3]  # history accumulates over fits


def test_history_metrics_match_validate():
    learn = learner().fit(2, lr=3e-3)
    v, row = learn.validate(), learn.history[-1]
    for m in ('accuracy', 'sensitivity', 'specificity', 'auroc'): assert abs(v[m] - row[f'valid_{m}']) < 1e-6
    assert abs(v['loss'] - row['valid_loss']) < 1e-5


def test_learner_learns_the_toy_task():
    seed_everything(0)
    learn = learner(dls=toy_dls(n_train=256, shift=2.0)).fit_one_cycle(4, 1e-2)
    assert learn.history[-1]['valid_accuracy'] > 0.8 and learn.history[-1]['valid_auroc'] > 0.9


def test_no_validation_set():
    dls = toy_dls(); dls.valid = None
    learn = learner(dls=dls).fit(1)
    assert 'valid_loss' not in learn.history[0] and 'train_accuracy' in learn.history[0]


def test_metrics_option():
    learn = learner(metrics=('accuracy',)).fit(1)
    assert {k for k in learn.history[0] if k.startswith('valid_')} == {'valid_loss', 'valid_accuracy'}
    learn = learner(metrics=()).fit(1)
    assert {k for k in learn.history[0] if k.startswith('valid_')} == {'valid_loss'}
    with pytest.raises(ValueError, match="Unknown metric.*'acc'"): learner(metrics=('acc',))


# --- metrics -----------------------------------------------------------------------------------

def test_metrics_match_hand_computed_values():
    p = torch.tensor([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4])
    t = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])  # TP 3, FN 1, FP 1, TN 3
    m = binary_metrics(p, t)
    assert m['accuracy'] == pytest.approx(6 / 8) and m['sensitivity'] == pytest.approx(3 / 4)
    assert m['specificity'] == pytest.approx(3 / 4) and m['precision'] == pytest.approx(3 / 4)
    assert m['f1'] == pytest.approx(3 / 4) and m['auroc'] == pytest.approx(13 / 16)
    # at threshold 0.35: TP 3 (0.3 still missed), FP 2 (0.7, 0.4), TN 2
    m = binary_metrics(p, t, threshold=0.35)
    assert m['sensitivity'] == pytest.approx(3 / 4) and m['specificity'] == pytest.approx(2 / 4)
    assert m['precision'] == pytest.approx(3 / 5) and m['auroc'] == pytest.approx(13 / 16)  # AUROC ignores the threshold


def test_undefined_metrics_are_nan_not_zero():
    m = binary_metrics(torch.tensor([0.9, 0.2]), torch.tensor([1, 1]))
    assert m['sensitivity'] == 0.5 and math.isnan(m['specificity']) and math.isnan(m['auroc'])
    m = binary_metrics(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]))
    assert math.isnan(m['precision']) and m['sensitivity'] == 0
    assert all(math.isnan(v) for v in binary_metrics(torch.zeros(0), torch.zeros(0)).values())
    with pytest.raises(ValueError, match='3 probabilities but 2 targets'): binary_metrics(torch.rand(3), torch.tensor([0, 1]))


def test_custom_metric_dict():
    m = binary_metrics(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), metrics={'n': lambda p, t, th: len(p)})
    assert m == {'n': 2.0}


# --- callbacks ---------------------------------------------------------------------------------

def test_early_stopping_stops():
    stopper = EarlyStoppingCB(patience=2, min_delta=1e-3)
    learn = learner().fit(10, lr=1e-12, cbs=[stopper])  # nothing changes, so nothing improves
    assert len(learn.history) == 3 and stopper.stopped_epoch == 3
    assert stopper not in learn.cbs  # fit-only callbacks are removed afterwards


def test_one_cycle_changes_the_lr():
    learn = learner().fit_one_cycle(4, 1e-2)  # 24 steps: the warm-up ends exactly on step 6
    lrs = learn.recorder.lrs
    assert len(lrs) == 4 * len(learn.dls.train)
    assert lrs[0] == pytest.approx(1e-2 / 25) and max(lrs) == pytest.approx(1e-2, rel=1e-3) and lrs[-1] < 1e-5
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1])) and all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_one_cycle_with_discriminative_lrs():
    learn = learner()
    seen = []
    class Peek(Callback):
        def after_step(self, learn): seen.append([g['lr'] for g in learn.opt.param_groups])
    learn.fit_one_cycle(2, {'body': 1e-4, 'head': 1e-2}, cbs=[Peek()])
    peak = max(seen, key=lambda lrs: lrs[1])
    assert peak == pytest.approx([1e-4, 1e-2], rel=1e-3)


def test_grad_clip_bounds_the_norm():
    clip, after = GradClipCB(0.01), []
    class Norm(Callback):
        order = 50
        def after_backward(self, learn):
            after.append(torch.norm(torch.stack([p.grad.norm() for p in learn.model.parameters() if p.grad is not None])))
    learner().fit(1, lr=1e-2, cbs=[clip, Norm()])
    assert max(clip.norms) > 0.01 and max(after) <= 0.01 * 1.0001


def test_save_best_in_memory_restores_best_weights():
    seed_everything(0)
    best = SaveBestCB(monitor='valid_loss')
    learn = learner().fit(4, lr=3e-2, cbs=[best])
    losses = [r['valid_loss'] for r in learn.history]
    assert best.best == min(losses) and best.best_epoch == losses.index(min(losses)) + 1
    assert learn.validate()['loss'] == pytest.approx(best.best, rel=1e-5)


def test_save_best_to_file(tmp_path):
    best = SaveBestCB(tmp_path / 'best.pt', monitor='valid_auroc', preprocessing={'preset': 'grey', 'size': SIZE})
    learn = learner().fit(3, lr=1e-2, cbs=[best])
    model, info = load_checkpoint(tmp_path / 'best.pt')
    assert info['metrics']['valid_auroc'] == best.best == max(r['valid_auroc'] for r in learn.history)
    assert info['metrics']['epoch'] == best.best_epoch and info['preprocessing'] == {'preset': 'grey', 'size': SIZE}
    assert torch.equal(learn.get_preds()[0], Learner(model, learn.dls, progress=False, device='cpu').get_preds()[0])
    with pytest.raises(ValueError, match="Cannot monitor 'valid_nope'"): learner().fit(1, cbs=[SaveBestCB(monitor='valid_nope')])
    with pytest.raises(ValueError, match="mode must be"): SaveBestCB(mode='lowest')


def test_mixed_precision_is_a_no_op_on_cpu():
    seen = []
    class Peek(Callback):
        def after_loss(self, learn): seen.append((learn.scaler, learn.loss.dtype))
    learner().fit(1, cbs=[Peek()])
    assert all(s is None and dt == torch.float32 for s, dt in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_mixed_precision_on_cuda():
    seen = []
    class Peek(Callback):
        def after_loss(self, learn): seen.append((learn.scaler is not None, learn.preds.dtype, learn.xb.device.type))
    learn = Learner(tiny_model(), toy_dls(), progress=False, device='cuda').fit(2, lr=1e-2, cbs=[GradClipCB(1.), Peek()])
    assert all(s and dt == torch.float16 and dev == 'cuda' for s, dt, dev in seen)
    assert learn.scaler is None and math.isfinite(learn.history[-1]['valid_loss'])
    probs, targets = learn.get_preds()
    assert probs.device.type == 'cpu' and probs.dtype == torch.float32 and len(probs) == len(targets)


def test_cancel_fit_from_a_callback_still_runs_after_fit():
    events = []
    class Stop(Callback):
        def after_batch(self, learn):
            if learn.iter == 1: raise CancelFitException()
        def after_fit(self, learn): events.append('after_fit')
    learn = learner().fit(3, cbs=[Stop()])
    assert events == ['after_fit'] and learn.history == []


# --- freezing and parameter groups ---------------------------------------------------------------

def test_freeze_leaves_exactly_the_intended_params_trainable():
    m = tiny_model()
    freeze(m, except_='head')
    assert trainable(m) == ['head.1.weight', 'head.1.bias', 'head.3.weight', 'head.3.bias']
    unfreeze(m)
    freeze(m, 'body.0')
    assert [n for n, p in m.named_parameters() if not p.requires_grad] == ['body.0.0.weight', 'body.0.0.bias']
    unfreeze(m, 'body')
    assert count_params(m)['trainable'] == count_params(m)['total']
    freeze(m, 'body', except_='body.1')
    assert [n for n in trainable(m) if n.startswith('body')] == ['body.1.0.weight', 'body.1.0.bias']
    with pytest.raises(ValueError, match=r"\['bdy'\].*\['body', 'head'\]"): freeze(m, 'bdy')


def test_prefixes_are_module_names_not_string_prefixes():
    m = nn.Sequential(); m.add_module('fc', nn.Linear(2, 2)); m.add_module('fc1', nn.Linear(2, 2))
    freeze(m, 'fc')
    assert trainable(m) == ['fc1.weight', 'fc1.bias']


def test_frozen_params_do_not_change_in_training():
    learn = learner()
    learn.freeze(except_='head')
    body = [p.clone() for p in learn.model.body.parameters()]
    head = [p.clone() for p in learn.model.head.parameters()]
    learn.fit(1, lr=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(body, learn.model.body.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(head, learn.model.head.parameters()))
    learn.unfreeze(); learn.fit(1, lr=1e-2)
    assert not all(torch.equal(a, b) for a, b in zip(body, learn.model.body.parameters()))


def test_param_groups():
    m = tiny_model()
    g = param_groups(m, {'body': 1e-4, 'head.3': 1e-2, '': 1e-3})
    assert [(x['name'], x['lr'], len(x['params'])) for x in g] == [('body', 1e-4, 4), ('head.3', 1e-2, 2), ('rest', 1e-3, 2)]
    with pytest.raises(ValueError, match="'head.1.weight' is under none"): param_groups(m, {'body': 1e-4, 'head.3': 1e-2})
    with pytest.raises(ValueError, match='positive'): param_groups(m, 0)
    with pytest.raises(ValueError, match='No parameter'): param_groups(m, {'bodyy': 1e-3, '': 1e-3})
    learn = learner(model=m).fit(1, lr={'body': 1e-4, 'head': 1e-3})
    assert [x['lr'] for x in learn.opt.param_groups] == [1e-4, 1e-3]


# --- LR finder ---------------------------------------------------------------------------------

def test_lr_finder_suggests_a_sensible_lr_and_leaves_no_trace():
    seed_everything(0)
    learn = learner(dls=toy_dls(n_train=512, shift=2.0, bs=32))
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng = torch.get_rng_state()
    res = learn.lr_find(num_it=60, plot=False)
    assert 1e-4 <= res.suggestion <= 1e-1
    assert len(res.lrs) == len(res.losses) == len(res.smoothed) <= 60 and res.lrs == sorted(res.lrs)
    assert res.lrs[0] == pytest.approx(1e-7)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state()) and learn.history == []
    assert res.plot() is not None


# --- predictions -------------------------------------------------------------------------------

def test_get_preds_and_predict():
    learn = learner()
    probs, targets = learn.get_preds()
    assert probs.shape == targets.shape == (48,) and ((0 <= probs) & (probs <= 1)).all()
    x = learn.dls.valid.dataset.tensors[0]
    unlabeled = DataLoader(TensorDataset(x), batch_size=10)
    p2, t2 = learn.get_preds(unlabeled)
    assert t2 is None and torch.allclose(p2, probs)
    assert torch.allclose(learn.predict(x[:3]), probs[:3]) and learn.predict(x[0]).shape == (1,)


def test_bad_data_errors():
    with pytest.raises(ValueError, match='dls must have .train and .valid'): Learner(tiny_model(), [1, 2])
    dls = toy_dls()
    dls.train = DataLoader(TensorDataset(torch.randn(8, 1, SIZE, SIZE)), batch_size=4)
    with pytest.raises(ValueError, match=r'training DataLoader must yield \(x, y\) batches; got list of length 1'):
        learner(dls=dls).fit(1)
    with pytest.raises(ValueError, match='metrics need logits'):
        Learner(nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 3)), toy_dls(), progress=False, device='cpu').fit(1)


def test_progress_output(capsys):
    Learner(tiny_model(), toy_dls(), device='cpu').fit(2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ['epoch', 'train_loss', 'valid_loss', 'accuracy'] and 'sensitivity' in out[0]
    assert [l.split()[0] for l in out[1:]] == ['1', '2']


def test_plot_history():
    learn = learner().fit(2)
    fig = plot_history(learn, ['loss', 'auroc'])
    assert [ax.get_title() for ax in fig.axes] == ['loss', 'auroc']
    assert [l.get_label() for l in fig.axes[0].lines] == ['train', 'valid']
    assert len(plot_history(learn.history_df).axes) == 9
    with pytest.raises(ValueError, match="No \\['auc'\\]"): plot_history(learn, ['auc'])
    with pytest.raises(ValueError, match='empty'): plot_history([])


# --- checkpoints -------------------------------------------------------------------------------

PREP = {'preset': 'grey', 'size': SIZE, 'channels': 1, 'mean': [0.5], 'std': [0.25]}


def test_checkpoint_round_trip_reproduces_predictions(tmp_path):
    seed_everything(1)
    learn = learner(model=tiny_model(in_channels=1)).fit(2, lr=1e-2)
    path = learn.save(tmp_path / 'sub' / 'm.pt', preprocessing=PREP)
    model, info = load_checkpoint(path)
    assert not model.training and model.arch == 'simple_cnn' and model.arch_kwargs == learn.model.arch_kwargs
    assert torch.equal(learn.get_preds()[0], Learner(model, learn.dls, progress=False, device='cpu').get_preds()[0])
    assert info['arch'] == 'simple_cnn' and info['class_names'] == ['not fractured', 'fractured']
    assert info['preprocessing'] == PREP and info['metrics'] == learn.history[-1]
    assert info['course_version'] == fracture_course.__version__ and info['path'] == str(path)
    assert 'state_dict' not in info
    raw = torch.load(path, weights_only=True)  # only plain types and tensors: loads with the safe unpickler
    assert set(raw['state_dict']) == set(learn.model.state_dict())
    other = learner()
    other.load(path)
    assert torch.equal(other.get_preds()[0], learn.get_preds()[0])


def test_checkpoint_takes_preset_objects_and_dls_metadata(tmp_path):
    class Preset:
        def to_dict(self): return dict(PREP)
    dls = toy_dls(); dls.preset, dls.classes = Preset(), ('healthy', 'broken')
    learn = learner(dls=dls)
    _, info = load_checkpoint(learn.save(tmp_path / 'm.pt'))
    assert info['preprocessing'] == PREP and info['class_names'] == ['healthy', 'broken'] and info['metrics'] == {}


def test_checkpoint_overrides_on_load(tmp_path):
    path = save_checkpoint(tmp_path / 'm.pt', tiny_model())
    with pytest.raises(ValueError, match='do not fit'): load_checkpoint(path, hidden=9)


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match='create_model'): save_checkpoint(tmp_path / 'x.pt', nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"preprocessing\['tfm'\] holds a function"):
        save_checkpoint(tmp_path / 'x.pt', tiny_model(), preprocessing={'tfm': lambda x: x})
    assert not (tmp_path / 'x.pt').exists()
    p = save_checkpoint(tmp_path / 'y.pt', nn.Linear(2, 2), arch='simple_cnn', arch_kwargs={})
    assert read_checkpoint(p)['arch'] == 'simple_cnn'


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pt does not exist'): load_checkpoint(tmp_path / 'nope.pt')
    run = tmp_path / 'run'; run.mkdir()
    with pytest.raises(ValueError, match=r'run is a folder, not a checkpoint file \(it holds no .pt file\)'): load_checkpoint(run)
    save_checkpoint(run / 'best.pt', tiny_model())
    with pytest.raises(ValueError, match=r'\(it holds best.pt\); give the file itself, e.g. .*run/best.pt'): load_checkpoint(run)
    (run / 'best.pt').rename(run / 'last.pt')
    with pytest.raises(ValueError, match=r'\(it holds last.pt\); give the file itself, e.g. .*run/last.pt'): load_checkpoint(run)


def test_damaged_checkpoint(tmp_path):
    good = save_checkpoint(tmp_path / 'good.pt', tiny_model())
    for name, data in [('half.pt', good.read_bytes()[:len(good.read_bytes()) // 2]), ('noise.pt', bytes(range(256)) * 4),
                       ('empty.pt', b''), ('text.pt', b'hello, I am not a checkpoint\n')]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as e: load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and 'damaged' in str(e.value) and 'save it again' in str(e.value)


def test_not_a_course_checkpoint(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / 'bare.pt')
    with pytest.raises(ValueError, match='bare.pt is not a fracture_course checkpoint.*bare state_dict'):
        load_checkpoint(tmp_path / 'bare.pt')
    torch.save([1, 2, 3], tmp_path / 'list.pt')
    with pytest.raises(ValueError, match='list.pt is not a fracture_course checkpoint. Save models with'):
        load_checkpoint(tmp_path / 'list.pt')


class Evil:
    def __reduce__(self): return (print, ('this must never run',))


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({'format': 'fracture_course.checkpoint', 'payload': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='evil.pt could not be read'): load_checkpoint(tmp_path / 'evil.pt')
    assert 'must never run' not in capsys.readouterr().out


def test_incompatible_checkpoints(tmp_path):
    path = save_checkpoint(tmp_path / 'm.pt', tiny_model())
    ck = torch.load(path, weights_only=True)
    torch.save({**ck, 'arch': 'resnet_from_the_future'}, tmp_path / 'unknown.pt')
    with pytest.raises(ValueError) as e: load_checkpoint(tmp_path / 'unknown.pt')
    msg = str(e.value)
    assert 'unknown.pt' in msg and "'resnet_from_the_future'" in msg and 'simple_cnn' in msg and 'Import the module' in msg
    torch.save({**ck, 'format_version': 99}, tmp_path / 'newer.pt')
    with pytest.raises(ValueError, match='newer.pt .*newer checkpoint format; upgrade fracture_course'):
        load_checkpoint(tmp_path / 'newer.pt')
    torch.save({**ck, 'arch_kwargs': {**ck['arch_kwargs'], 'widths': [8, 8]}}, tmp_path / 'mismatch.pt')
    with pytest.raises(ValueError, match="mismatch.pt: the saved weights do not fit a 'simple_cnn' model"):
        load_checkpoint(tmp_path / 'mismatch.pt')
    del ck['state_dict']
    torch.save(ck, tmp_path / 'noweights.pt')
    with pytest.raises(ValueError, match=r"noweights.pt is an incomplete checkpoint \(no \['state_dict'\]\)"):
        load_checkpoint(tmp_path / 'noweights.pt')
    learn = learner(model=nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2)))
    learn.model.arch = 'other'
    with pytest.raises(ValueError, match="holds a 'simple_cnn' model but this learner's model is 'other'"): learn.load(path)

def test_loss_module_is_moved_to_the_learners_device(monkeypatch):
    "A class-weighted loss keeps its weight on the device of the model (a CUDA run failed without this)"
    import types
    from torch import nn
    from fracture_course.learner import Learner, DeviceCB
    moved = []
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    monkeypatch.setattr(loss, 'to', lambda d: moved.append(d) or loss)
    learn = types.SimpleNamespace(model=nn.Linear(2, 2), loss_func=loss, device=torch.device('cpu'))
    DeviceCB().before_fit(learn)
    assert moved == [torch.device('cpu')]

def test_checkpoint_of_a_pretrained_backbone_loads_without_fetching_weights(tmp_path, monkeypatch):
    from fracture_course import models
    from fracture_course.learner import save_checkpoint, load_checkpoint
    m = models.create_model('resnet18', pretrained=False)
    m.arch_kwargs = {'pretrained': True}   # as saved by a real pretrained run
    save_checkpoint(tmp_path/'r.pt', m)
    monkeypatch.setattr(models, 'pretrained_state', lambda *a, **k: (_ for _ in ()).throw(AssertionError('fetched weights')))
    loaded, info = load_checkpoint(tmp_path/'r.pt')
    assert info['arch'] == 'resnet18' and torch.equal(loaded.fc.weight, m.fc.weight)

@pytest.mark.parametrize('n_batches', [1, 2, 3, 4, 5])
def test_one_cycle_survives_very_short_fits(n_batches):
    "A tiny dataset (a handful of batches) must not crash the one-cycle schedule"
    from fracture_course.learner import Learner
    x, y = torch.randn(8 * n_batches, 4), torch.randint(0, 2, (8 * n_batches,))
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    learn = Learner(nn.Linear(4, 2), SimpleNamespace(train=dl, valid=dl), progress=False, device='cpu')
    learn.fit_one_cycle(1, 1e-2)
    assert len(learn.history) == 1 and math.isfinite(learn.history[0]['train_loss'])


def test_a_diverging_run_stops_and_saves_nothing(tmp_path):
    "A learning rate far too high: the loss turns NaN, training stops with the epoch and the rate named, and no checkpoint of NaN weights is written"
    from fracture_course.learner import SaveBestCB, TrainingDiverged
    learn = learner()
    with pytest.raises(TrainingDiverged, match='diverged in epoch 1: the training loss is nan. Lower the learning rate \\(it reached 1e\\+30\\)'):
        learn.fit(2, lr=1e30, cbs=[SaveBestCB(tmp_path/'best.pt', monitor='valid_auroc')])
    assert not (tmp_path/'best.pt').exists()
    for bad in (float('inf'), float('nan'), 0):
        with pytest.raises(ValueError, match='positive, finite number'): learner().fit(1, lr=bad)

def test_bad_inputs_are_refused_before_training_with_what_to_do():
    from types import SimpleNamespace
    from torch.utils.data import DataLoader, TensorDataset
    from fracture_course.finetune import discriminative_lrs, fine_tune
    from fracture_course.learner import binary_metrics, param_groups
    m = create_model('simple_cnn', img_size=32, widths=(4, 4, 4))
    x, y = torch.randn(40, 1, 32, 32), torch.randint(0, 2, (40,))
    full, empty = DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x[:0], y[:0]), batch_size=8)
    learn = Learner(m, SimpleNamespace(train=empty, valid=full), progress=False)
    cases = [(lambda: learn.fit(1), r'The training DataLoader yields no batches \(0 items, batch size 8\)'),
             (lambda: learn.lr_find(plot=False), 'The training DataLoader yields no batches'),
             (lambda: Learner(m, SimpleNamespace(train=full, valid=DataLoader(TensorDataset(x[:5], y[:5]), batch_size=8, drop_last=True)),
                              progress=False).fit(1), r'The validation DataLoader yields no batches \(5 items, batch size 8, drop_last\)'),
             (lambda: learn.fit(-1), 'n_epochs must be a whole number, 0 or more; got -1'),
             (lambda: learn.get_preds(empty), 'The prediction DataLoader yields no batches'),
             (lambda: param_groups(m, {'': float('nan')}), "learning rate of '' must be a positive, finite number, got nan"),
             (lambda: param_groups(m, {'body': -1e-2, '': 1e-3}), "learning rate of 'body' must be a positive"),
             (lambda: binary_metrics(torch.rand(4, 2), torch.ones(4)), r'shape \[N\]; got \[4, 2\]: take probs\[:, 1\]'),
             (lambda: binary_metrics(torch.randn(8) * 3, torch.ones(8)), r'probabilities in \[0, 1\].*Logits\?'),
             (lambda: Learner(m, SimpleNamespace(train=full, valid=full), threshold=5), 'between 0 and 1; got 5'),
             (lambda: fine_tune(learn, 1), 'fine_tune needs a pretrained backbone.*this SimpleCNN has none'),
             (lambda: discriminative_lrs(create_model('efficientnet_lite0', pretrained=False), 0), 'positive, finite number, got 0')]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg): call()
    one_output = create_model('simple_cnn', img_size=32, widths=(4, 4), n_classes=1)
    for model, targets, shown in ((one_output, y, r'output \[8, 1\] with the targets \[8\] \(torch.int64\)'), (m, y.float(), r'\(torch.float32\)')):
        dl = DataLoader(TensorDataset(x, targets), batch_size=8)
        with pytest.raises(ValueError, match=shown + r'.*logits \[B, 2\].*class indices 0 and 1'):
            Learner(model, SimpleNamespace(train=dl, valid=dl), progress=False).fit(1)
    before = [p.clone() for p in m.parameters()]
    learn.fit(0)  # zero epochs: allowed, and nothing changes
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_one_hot_targets_fail_before_training_with_what_to_do():
    "One-hot float targets pass CrossEntropyLoss (as class probabilities), so the Recorder refuses them at the first batch"
    dls = toy_dls()
    x, y = dls.train.dataset.tensors
    one_hot = SimpleNamespace(train=DataLoader(TensorDataset(x, nn.functional.one_hot(y, 2).float()), batch_size=16), valid=dls.valid)
    learn = learner(one_hot)
    before = [p.clone() for p in learn.model.parameters()]
    with pytest.raises(ValueError, match=r'targets of a training batch have shape \[16, 2\] \(torch.float32\).*class index.*0 or 1.*y.argmax\(1\)'):
        learn.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))  # refused before any step
    learner(dls).fit(1)  # class indices still train


def test_metrics_stay_in_their_range(monkeypatch):
    "float32 rounding can put torchmetrics' AUROC a hair above 1 (1.0000001 seen in a checkpoint): clamped where computed"
    import fracture_course.learner as L
    monkeypatch.setattr(L.tmc, 'binary_auroc', lambda p, t: torch.tensor(1.0000001), raising=False)  # on the lazy module's instance
    monkeypatch.setattr(L.tmc, 'binary_accuracy', lambda p, t, th: torch.tensor(-1e-7), raising=False)
    m = binary_metrics(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    assert m['auroc'] == 1.0 and m['accuracy'] == 0.0


def test_save_best_warns_when_the_monitored_value_is_never_a_number(tmp_path):
    "valid_auroc is NaN on a one-class validation split: SaveBestCB keeps nothing, and says so naming the metric"
    dls = toy_dls()
    x, y = dls.valid.dataset.tensors
    one_class = SimpleNamespace(train=dls.train, valid=DataLoader(TensorDataset(x[y == 0], y[y == 0]), batch_size=16))
    save_best = SaveBestCB(tmp_path / 'best.pt', monitor='valid_auroc')
    with pytest.warns(LearnerWarning, match=r"SaveBestCB kept no epoch: valid_auroc was nan .*in every epoch.*last epoch's weights.*best.pt was not written"):
        learner(one_class).fit(2, cbs=[save_best])
    assert save_best.best is None and not (tmp_path / 'best.pt').exists()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        learner(dls).fit(1, cbs=[SaveBestCB(monitor='valid_auroc')])  # a defined metric: no warning


def test_lr_suggestion_warns_on_a_flat_curve_only():
    "A flat sweep (a 10-step sweep on 3 batches returned 6.0e-07 silently) warns; a real valley does not"
    import warnings
    lrs = [10 ** (-4 + k / 10) for k in range(40)]
    flat = [0.69 + 0.003 * math.sin(k) for k in range(40)]
    with pytest.warns(LRFinderWarning, match=r'no clear descent.*Sweep more batches.*wider range'):
        assert math.isfinite(lr_suggestion(lrs, flat))
    valley = [0.69 - 0.25 * math.exp(-((k - 28) / 4) ** 2) for k in range(40)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert lr_suggestion(lrs, valley) == pytest.approx(lrs[28] / 10)
        assert math.isnan(lr_suggestion(lrs, [float('nan')] * 40))
    with pytest.warns(LRFinderWarning):  # the reviewer's case, through the Learner
        learner(toy_dls(n_train=48)).lr_find(num_it=10, plot=False)


def test_history_names_each_param_groups_lr():
    learn = learner()
    learn.fit(1, lr={'body': 1e-4, 'head': 1e-3})
    row = learn.history[-1]
    assert (row['lr'], row['lr_body'], row['lr_head']) == (1e-4, 1e-4, 1e-3)
    learn.fit(1, lr=1e-3)
    assert not any(k.startswith('lr_') for k in learn.history[-1])


def test_load_checkpoint_names_the_overrides_and_the_size_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / 'm.pt', tiny_model())
    with pytest.raises(ValueError) as e: load_checkpoint(path, img_size=32)
    msg = str(e.value)
    assert "m.pt: the saved weights do not fit a 'simple_cnn' model" in msg and 'size mismatch for head.1.weight' in msg
    assert "overrides {'img_size': 32} are the likely cause" in msg and "'img_size': 16" in msg and 'Error(s) in loading' not in msg


def test_the_lazy_module_imports_at_first_use_and_copies_without_recursion():
    "LazyModule: an attribute imports the module; copy and pickle (which look up dunders before __init__ runs) work"
    import copy, pickle
    from fracture_course.learner import LazyModule
    lazy = LazyModule('json')
    assert lazy.dumps([1]) == '[1]' and copy.copy(lazy)._name == 'json' and pickle.loads(pickle.dumps(lazy)).loads('2') == 2
    with pytest.raises(ModuleNotFoundError): LazyModule('no_such_module_here').anything
