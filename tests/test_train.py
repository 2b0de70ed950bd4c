"`fracture-course train` and `train_run`: a full run on a tiny dataset, its outputs, and bad options."
import json, os, shutil, subprocess, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np
import pytest
from conftest import bar_xrays
import torch
from PIL import Image
from fracture_course.config import get_config
from fracture_course.learner import load_checkpoint
from fracture_course import train
from fracture_course.data import FractureData, load_dataset
from fracture_course.train import KeptRunWarning, cached_run, prune_runs, recipe_for, run_key, run_note, run_plan, train_run

CLI = str(Path(sys.executable).parent/'fracture-course')

@pytest.fixture
def tiny(tmp_path):
    "Split folders where fractured images carry a bright bar: learnable in one epoch"
    return bar_xrays(tmp_path/'tiny')

def test_train_run_writes_checkpoint_metrics_and_curves(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    cfg = get_config('quick', epochs=2, image_size=32, batch_size=16, lr=3e-3)
    assert run_plan('simple_cnn', cfg)[1] == 14  # the quick recipe's own epochs win over the settings' ...
    r = train_run('simple_cnn', tiny, tmp_path/'out', cfg, progress=False, recipe_overrides={'epochs': 2})  # ... an override wins over both
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert set(m['test']) >= {'accuracy', 'sensitivity', 'specificity', 'auroc'} and m['test_trivial']['accuracy'] == 0.5
    assert len(m['history']) == 2 and m['preprocessing']['channels'] == 1 and (tmp_path/'out'/'curves.png').stat().st_size > 1000
    model, info = load_checkpoint(tmp_path/'out'/'best.pt')
    assert info['arch'] == 'simple_cnn' and info['preprocessing']['size'] == 32
    # what it was trained on travels too, for `evaluate` to score the same test split
    assert info['trained_on'] == {'dataset': 'tiny', 'root': str(tiny), 'seed': 42, 'counts': m['counts'], 'split_digest': m['split_digest'],
                                  'files_digest': m['files_digest']}
    # eight fractured validation images are too few for a threshold worth keeping: said, with the count
    assert m['threshold_fractures'] == 8 and 'chosen on 8 fractured validation image(s)' in m['threshold_warning']
    # and what the threshold gave there, for whoever deploys the model to say what it costs
    from fracture_course.evaluate import saved_operating_point
    v = saved_operating_point(info)['validation']
    assert v == {**{k: m['valid_at_threshold'][k] for k in ('sensitivity', 'specificity', 'precision')}, 'images': 16, 'fractures': 8}, v
    assert v['sensitivity'] >= 0.9
    x = next(iter(r['learner'].dls.test))[0]
    assert torch.equal(model(x).argmax(1), r['learner'].model.eval()(x).argmax(1))

def test_the_operating_point_records_what_it_gave_on_validation_when_measured():
    res = {'threshold': 0.2, 'target_sensitivity': 0.9, 'dataset': 'd', 'counts': {'valid': {'fractured': 3, 'not fractured': 7}},
           'valid_at_threshold': {'sensitivity': 1.0, 'specificity': 0.5, 'precision': float('nan'), 'auroc': 0.8}, 'threshold_fractures': 3}
    op = train.run_operating_point(res)
    assert op['validation'] == {'sensitivity': 1.0, 'specificity': 0.5, 'precision': None, 'images': 10, 'fractures': 3}  # NaN: None, for JSON
    assert json.loads(json.dumps(op, allow_nan=False)) == op and 'validation split of d (10 images)' in op['source']
    del res['valid_at_threshold']  # a run measured before it was recorded: an operating point without it, which still loads
    from fracture_course.evaluate import saved_operating_point
    assert 'validation' not in train.run_operating_point(res) and saved_operating_point({'operating_point': train.run_operating_point(res)})['validation'] is None

def test_unknown_model_has_no_recipe():
    with pytest.raises(ValueError, match='Known models: .*simple_cnn'): recipe_for('resnet9000')

def test_cli_train_and_its_errors(tiny, tmp_path):
    env = {'FRACTURE_CACHE_DIR': str(tmp_path/'cache'), 'PATH': str(Path(sys.executable).parent)}
    r = subprocess.run([CLI, 'train', '--data', str(tiny), '--epochs', '1', '--size', '32', '--out', str(tmp_path/'o'), '--quiet'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert 'simple_cnn on tiny' in r.stdout and 'trivial' in r.stdout and (tmp_path/'o'/'best.pt').is_file()
    assert 'warning: the threshold was chosen on 8 fractured validation image(s)' in r.stderr
    assert f'data {tiny} |' in r.stdout.splitlines()[0]  # the settings line names the data it trains on
    # the operating point chosen on validation travels in the checkpoint, and predict uses it unless told otherwise
    op = load_checkpoint(tmp_path/'o'/'best.pt')[1]['operating_point']
    assert op['threshold'] == json.loads((tmp_path/'o'/'metrics.json').read_text())['threshold'] and 'validation split of tiny' in op['source']
    img = str(next((tiny/'test'/'fractured').glob('*.png')))
    r = subprocess.run([CLI, 'predict', str(tmp_path/'o'/'best.pt'), img], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and f"threshold {op['threshold']:.4f} (saved in the checkpoint: validation split of tiny" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([CLI, 'predict', str(tmp_path/'o'/'best.pt'), img, '--threshold', '0.7'], capture_output=True, text=True, env=env)
    assert 'threshold 0.7000 (--threshold)' in r.stdout
    for args, msg in [(['--epochs', '0'], '--epochs must be a positive, finite number'), (['--lr', 'inf'], '--lr must be a positive, finite number, got inf'),
                      (['--lr', 'nan'], '--lr must be'), (['--model', 'nope'], 'simple_cnn'),
                      (['--data', str(tmp_path/'missing')], 'missing'), (['--size', '0'], '--size must be a positive'),
                      (['--lr', '100'], "--lr is '100.0'; it must be between"), (['--seed', '-1'], "--seed is '-1'")]:
        r = subprocess.run([CLI, 'train', '--out', str(tmp_path/'x'), '--quiet', *args], capture_output=True, text=True, env=env)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr)
    assert not (tmp_path/'x').exists()  # a refused run leaves no empty --out folder behind
    r = subprocess.run([CLI, 'train', '--profile', 'huge'], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and 'quick' in r.stderr

def test_zoom_trains_on_crops_and_predicts_on_the_whole_larger_image(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    cfg = get_config('quick', epochs=1, image_size=32, batch_size=8)
    ov = {'zoom': 1.5, 'frozen': (), 'sizes': None, 'freeze_epochs': 0}
    r = train_run('inception', tiny, tmp_path/'out', cfg, progress=False, recipe_overrides=ov)
    assert next(iter(r['learner'].dls.train))[0].shape[-1] == 32 and r['preprocessing']['size'] == 48
    model, info = load_checkpoint(tmp_path/'out'/'best.pt')
    assert info['preprocessing']['size'] == 48 and model(next(iter(r['learner'].dls.test))[0]).shape[-1] == 2
    with pytest.raises(ValueError, match='one fixed size'): train_run('simple_cnn', tiny, None, cfg, progress=False, recipe_overrides={'zoom': 1.5})
    with pytest.raises(ValueError, match='at least 1'): train_run('inception', tiny, None, cfg, progress=False, recipe_overrides={'zoom': 0.5})
    with pytest.raises(ValueError, match='leaves no room for crops'): train_run('inception', tiny, None, cfg, progress=False, recipe_overrides={'zoom': 1.1})
    assert r['train_crops'].startswith('zoom 1.5, crops aimed at the boxes of 0 of 48')  # split folders have no boxes

def test_cli_train_on_devices_refuses_what_cannot_run(tiny, tmp_path):
    env = {'FRACTURE_CACHE_DIR': str(tmp_path/'cache'), 'PATH': str(Path(sys.executable).parent)}
    base = [CLI, 'train', '--data', str(tiny), '--out', str(tmp_path/'x'), '--quiet']
    for args, msg in [(['--devices', '64', '--accelerator', 'cpu'], 'pass --devices'), (['--devices', '2', '--strategy', 'nope'], 'Valid strategies')]:
        r = subprocess.run(base + args, capture_output=True, text=True, env=env)
        assert r.returncode == 1 and msg in r.stderr, (args, r.stderr[-800:])
    assert not (tmp_path/'x'/'best.pt').exists()


def test_print_run_shows_undefined_metrics_as_na(capsys):
    "A metric undefined on the test split (None in metrics.json) prints n/a; no files, no 'Wrote' line"
    from fracture_course.train import _print_run
    m = {'auroc': None, 'sensitivity': 0.5, 'specificity': None, 'accuracy': 0.5}
    _print_run({'model': 'simple_cnn', 'dataset': 'd', 'weights': 'random initialisation', 'best_epoch': 1, 'seconds': 2.0,
                'threshold': 0.3, 'target_sensitivity': 0.9, 'test_at_threshold': m, 'test': m,
                'test_trivial': {**m, 'predicts': 'fractured'}})
    out = capsys.readouterr().out
    assert out.count('n/a') == 6 and '0.500' in out and "always 'fractured'" in out and 'Wrote' not in out
    counts = {'train': {'not fractured': 24, 'fractured': 24}, 'valid': {'not fractured': 8, 'fractured': 8}}  # a manifest without test rows
    _print_run({'model': 'simple_cnn', 'dataset': 'd', 'weights': 'random initialisation', 'best_epoch': 1, 'seconds': 2.0,
                'threshold': 0.3, 'target_sensitivity': 0.9, 'counts': counts, 'test_at_threshold': {}, 'test': {}, 'test_trivial': {}})
    out = capsys.readouterr().out
    assert 'No test split in d' in out and "rows with split 'test' in a manifest" in out and 'n/a' not in out and 'AUROC' not in out


def test_cli_train_takes_epochs_and_lr_from_the_environment_over_the_recipe(tiny, tmp_path):
    "FRACTURE_EPOCHS and FRACTURE_LR are what the user asked for: they win over the quick recipe's 14 epochs and 3e-3; options win over them"
    env = {'FRACTURE_CACHE_DIR': str(tmp_path/'cache'), 'PATH': str(Path(sys.executable).parent), 'FRACTURE_EPOCHS': '1', 'FRACTURE_LR': '0.002'}
    r = subprocess.run([CLI, 'train', '--data', str(tiny), '--size', '32', '--out', str(tmp_path/'o'), '--quiet', '--profile', 'quick'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert 'peak lr 0.002, 1 epochs' in r.stdout, r.stdout
    m = json.loads((tmp_path/'o'/'metrics.json').read_text())
    assert len(m['history']) == 1 and m['recipe']['epochs'] == 1 and m['recipe']['lr'] == 0.002
    r = subprocess.run([CLI, 'train', '--data', str(tiny), '--size', '32', '--epochs', '2', '--out', str(tmp_path/'p'), '--quiet'],
                       capture_output=True, text=True, env={**env, 'FRACTURE_EPOCHS': 'two'})
    assert r.returncode == 1 and "FRACTURE_EPOCHS" in r.stderr  # a bad value is named even when an option overrides it
    r = subprocess.run([CLI, 'train', '--data', str(tiny), '--size', '32', '--epochs', '2', '--out', str(tmp_path/'p'), '--quiet'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and len(json.loads((tmp_path/'p'/'metrics.json').read_text())['history']) == 2

def test_cli_train_checks_its_output_folder_and_names_an_unreadable_image(tiny, tmp_path, monkeypatch, capsys):
    "A --out that cannot be a folder fails before any training; an image that cannot be decoded is named, without a traceback"
    import shutil, time
    from fracture_course.cli import main
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    (tmp_path/'afile').write_text('not a folder')
    t0 = time.perf_counter()
    assert main(['train', '--data', str(tiny), '--epochs', '1', '--size', '32', '--out', str(tmp_path/'afile'), '--quiet']) == 1
    err = capsys.readouterr().err
    assert '--out' in err and 'afile' in err and 'choose another --out' in err and time.perf_counter() - t0 < 20
    bad = tmp_path/'bad'; shutil.copytree(tiny, bad)
    (bad/'train'/'fractured'/'notes.png').write_text('not an image')
    (bad/'train'/'fractured'/'empty.png').write_bytes(b'')
    with pytest.warns(UserWarning, match=r"2 image file\(s\) in .* could not be opened and were left out: .*empty.png \(empty file \(0 bytes\); re-download or delete it\); .*notes.png \(not an image"):
        assert main(['train', '--data', str(bad), '--epochs', '1', '--size', '32', '--out', str(tmp_path/'o'), '--quiet']) == 0  # trained on the rest
    assert 'Traceback' not in capsys.readouterr().err


def test_cli_train_takes_local_imagenet_weights_or_none_for_a_pretrained_model(tiny, tmp_path):
    "Offline, resnet18's weights cannot be fetched: the message names --weights FILE and --no-pretrained, and both work"
    import torchvision
    env = {'FRACTURE_CACHE_DIR': str(tmp_path/'cache'), 'PATH': str(Path(sys.executable).parent), 'TORCH_HOME': str(tmp_path/'torch')}
    run = lambda *a: subprocess.run([CLI, 'train', '--data', str(tiny), '--model', 'resnet18', '--epochs', '1', '--size', '32', '--quiet', *a],
                                    capture_output=True, text=True, env=env)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path/'r18.pth'); (tmp_path/'notes.txt').write_text('not weights')
    r = run('--weights', str(tmp_path/'r18.pth'), '--out', str(tmp_path/'w'))
    assert r.returncode == 0 and f'resnet18 on tiny (local file {tmp_path/"r18.pth"})' in r.stdout, r.stderr[-2000:]
    r = run('--no-pretrained', '--out', str(tmp_path/'n'))
    assert r.returncode == 0 and 'resnet18 on tiny (random initialisation' in r.stdout, r.stderr[-2000:]
    assert '1 epochs after 1 head-only' in r.stdout  # why --epochs 1 reports a best epoch 2
    for args, says in [(['--weights', str(tmp_path/'nope.pth')], 'no such file'), (['--weights', 'x', '--no-pretrained'], 'not allowed with'),
                       (['--model', 'simple_cnn', '--no-pretrained'], 'simple_cnn has no pretrained weights'),
                       (['--weights', str(tmp_path/'notes.txt')], f'Weights file {tmp_path/"notes.txt"} is not a PyTorch weights file')]:
        r = run(*args, '--out', str(tmp_path/'x'))
        assert r.returncode in (1, 2) and says in r.stderr, (args, r.stderr[-800:])

def test_a_run_that_stops_half_way_leaves_the_earlier_run_whole(tiny, tmp_path, monkeypatch):
    "best.pt is written at every improvement, the measurements at the end: a run is staged in a scratch folder inside --out and moved in complete, or not at all"
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    cfg, out = get_config('quick', image_size=32, batch_size=16), tmp_path/'runs'/'a'
    train_run('simple_cnn', tiny, out, cfg, progress=False, recipe_overrides={'epochs': 1})
    before = {f: (out/f).read_bytes() for f in ('best.pt', 'metrics.json', 'curves.png')}
    (out/'eval-test').mkdir(); (out/'eval-test'/'metrics.json').write_text('{}')  # an evaluation of that model
    def interrupted(*a, **k): raise KeyboardInterrupt  # Ctrl-C after training, before the run is written
    with monkeypatch.context() as m:
        m.setattr(train, 'evaluate_run', interrupted)
        with pytest.raises(KeyboardInterrupt): train_run('simple_cnn', tiny, out, replace(cfg, seed=3), progress=False, recipe_overrides={'epochs': 2})
    assert {f: (out/f).read_bytes() for f in before} == before and not list(out.glob('.staging-*'))  # untouched, no scratch left
    note = train.earlier_run_note(out)
    assert 'holds an earlier run' in note and 'eval-test/ in it describe the earlier model' in note and train.earlier_run_note(tmp_path) is None
    r = train_run('simple_cnn', tiny, out, replace(cfg, seed=3), progress=False, recipe_overrides={'epochs': 2})
    assert all((out/f).read_bytes() != b for f, b in before.items()) and r['paths']['checkpoint'] == str((out/'best.pt').resolve())
    assert json.loads((out/'metrics.json').read_text())['settings']['seed'] == 3 and load_checkpoint(out/'best.pt')[1]['trained_on']['seed'] == 3

def test_a_run_that_cannot_be_moved_into_its_folder_stays_whole_where_the_error_says(tmp_path, monkeypatch):
    "A move that fails (a file in the way, a full disk) loses nothing: the run stays complete in its scratch folder, named in the error"
    out = tmp_path/'run'; out.mkdir(); (out/'best.pt').write_text('old')
    def refuse(src, dst): raise OSError(18, 'Invalid cross-device link')
    monkeypatch.setattr(train.os, 'replace', refuse)
    with pytest.raises(OSError, match='could not be moved into .* it is complete in .*staging-') as e:
        with train.staged(out) as f: (f/'best.pt').write_text('new'); (f/'metrics.json').write_text('{}')
    kept = Path(str(e.value).rsplit('complete in ', 1)[1])
    assert (out/'best.pt').read_text() == 'old' and sorted(p.name for p in kept.iterdir()) == ['best.pt', 'metrics.json']
    assert train.earlier_run_note(out) is not None and 'staging' not in train.earlier_run_note(out)

def test_a_killed_runs_scratch_folder_is_removed_once_nothing_in_it_changed_for_a_day(tmp_path):
    out, day = tmp_path/'run', 86400
    for name, file_age in (('.staging-dead', 2 * day), ('.staging-alive', 60)):  # both folders old; one still has a file just saved
        (out/name).mkdir(parents=True); (out/name/'best.pt').write_text('x')
        os.utime(out/name/'best.pt', (time.time() - file_age,) * 2); os.utime(out/name, (time.time() - 2 * day,) * 2)
    with train.staged(out) as f: (f/'best.pt').write_text('new')
    assert sorted(p.name for p in out.iterdir()) == ['.staging-alive', 'best.pt']

@pytest.mark.parametrize('override, says', [({'epochs': 0}, 'epochs=0'), ({'epochs': -3}, 'epochs=-3'), ({'lr': 0.0}, 'lr=0.0'),
    ({'freeze_epochs': -1}, 'freeze_epochs=-1'), ({'target_sensitivity': 1.5}, 'target_sensitivity=1.5'), ({'sizes': (32, 64)}, 'one fixed size'),
    ({'monitor': 'valid_auc'}, "monitor='valid_auc'"), ({'sizes': (0,)}, r'sizes=\(0,\)'), ({'div': 0.0}, 'div=0.0'), ({'ema': 1.0}, 'ema=1.0'),
    ({'aug': 'strong'}, "Unknown augmentation level 'strong'")])
def test_recipe_values_that_cannot_train_are_refused_before_any_image_is_read(override, says):
    with pytest.raises(ValueError, match=says): run_plan('simple_cnn', get_config('quick'), override)

def _cached(data, cfg, **kwargs):
    return cached_run('simple_cnn', data, cfg, progress=False, recipe_overrides={'epochs': 1}, **kwargs)

@pytest.fixture
def small_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    return get_config('quick', image_size=32, batch_size=16)

def test_cached_run_trains_once_then_loads_the_same_model(tiny, small_cfg, monkeypatch):
    first = _cached(tiny, small_cfg)
    folder = Path(first['paths']['checkpoint']).parent
    os.utime(folder, (1e9, 1e9))  # unused since 2001: `prune_runs` would take it, but a load marks it as used
    monkeypatch.setattr(train, 'train_run', lambda *a, **k: pytest.fail('trained again'))
    again = _cached(tiny, small_cfg)
    assert folder.stat().st_mtime > 1e9 and prune_runs(folder.parent) == []
    assert not first['cached'] and again['cached'] and 'loaded from the cache (runs/simple_cnn-' in run_note(again)
    assert again['threshold'] == first['threshold'] and again['test'] == first['test'] and len(again['learner'].history) == 1
    assert again['paths'] == first['paths'] and Path(again['paths']['checkpoint']).parent.parent == small_cfg.cache_dir/'runs'
    for a, b in zip(first['learner'].dls.test, again['learner'].dls.test): assert torch.equal(a[0], b[0])  # the same loaders
    assert torch.equal(first['learner'].get_preds(first['learner'].dls.test)[0], again['learner'].get_preds(again['learner'].dls.test)[0])

def test_run_key_changes_with_what_shapes_the_weights_and_only_that(tiny, small_cfg, monkeypatch):
    data = load_dataset(tiny, seed=small_cfg.seed)
    key = run_key('simple_cnn', data, small_cfg)
    assert key == run_key('simple_cnn', load_dataset(tiny, seed=small_cfg.seed), replace(small_cfg, n_trials=7, cache_dir=Path('/elsewhere')))
    # settings the recipe overrules, and a model argument equal to the recipe's, change nothing the run does
    assert key == run_key('simple_cnn', data, replace(small_cfg, epochs=5, lr=1e-4)) == run_key('simple_cnn', data, small_cfg, hidden=64)
    relabelled = FractureData(data.name, data.root, [replace(o, label=1 - o.label) if i == 0 else o for i, o in enumerate(data.items)])
    changed = {'recipe': run_key('simple_cnn', data, small_cfg, {'epochs': 3}), 'model': run_key('inception', data, small_cfg),
               'model argument': run_key('simple_cnn', data, small_cfg, hidden=32), 'seed': run_key('simple_cnn', data, replace(small_cfg, seed=1)),
               'batch size': run_key('simple_cnn', data, replace(small_cfg, batch_size=8)), 'a label': run_key('simple_cnn', relabelled, small_cfg)}
    changed['the order'] = run_key('simple_cnn', FractureData(data.name, data.root, data.items[::-1]), small_cfg)
    boxed = FractureData(data.name, data.root, [replace(o, meta={**o.meta, 'boxes': [[1, 2, 5, 6]]}) if i == 0 else o for i, o in enumerate(data.items)])
    changed['a box'] = run_key('simple_cnn', boxed, small_cfg)
    torch.set_num_threads(2)
    try: changed['threads'] = run_key('simple_cnn', data, small_cfg)
    finally: torch.set_num_threads(1)
    f = data.items[0].path; st = f.stat(); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed['a file'] = run_key('simple_cnn', data, small_cfg)
    monkeypatch.setattr(train, '_library_digest', lambda: 'other code')
    changed['the code'] = run_key('simple_cnn', data, small_cfg)
    assert key not in changed.values() and len(set(changed.values())) == len(changed), changed

def test_cached_run_trains_again_over_an_unreadable_run_and_leaves_no_half_run(tiny, small_cfg, monkeypatch):
    folder = Path(_cached(tiny, small_cfg)['paths']['checkpoint']).parent
    (folder/'metrics.json').write_text('{"model": "simple_cnn", cut')
    with pytest.warns(KeptRunWarning, match=f'{folder.name} could not be loaded .*training it again'): again = _cached(tiny, small_cfg)
    assert not again['cached'] and json.loads((folder/'metrics.json').read_text())['model'] == 'simple_cnn'
    def fails(*a, **k): raise RuntimeError('out of memory')
    monkeypatch.setattr(train, 'train_run', fails)
    with pytest.raises(RuntimeError, match='out of memory'): _cached(tiny, small_cfg, hidden=32)
    assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == [folder.name]  # nothing kept of the failed run, not even its scratch folder

def test_cached_run_keeps_the_run_of_another_process_that_finished_first(tiny, small_cfg, monkeypatch):
    data = load_dataset(tiny, seed=small_cfg.seed)
    final = small_cfg.cache_dir/'runs'/f"simple_cnn-{run_key('simple_cnn', data, small_cfg, {'epochs': 1})}"
    real = train.train_run
    def racing(model, data, out, *a, **k):
        res = real(model, data, out, *a, **k)
        shutil.copytree(out, final)  # another process, same run, done a moment earlier
        (final/'theirs').touch()
        return res
    monkeypatch.setattr(train, 'train_run', racing)
    r = _cached(data, small_cfg)
    assert not r['cached'] and Path(r['paths']['checkpoint']) == final/'best.pt' and (final/'theirs').is_file()
    assert sorted(p.name for p in final.parent.iterdir()) == [f'.{final.name}.lock', final.name]

RACER = """
import json, sys, time
from pathlib import Path
from fracture_course import train
from fracture_course.config import get_config
root, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
real = train.train_run
def slow(*a, **k): time.sleep(3); return real(*a, **k)  # long enough for the other process to arrive while this one trains
train.train_run = slow
cfg = get_config('quick', image_size=32, batch_size=16)
(root/me).touch()
while not (root/other).exists(): time.sleep(0.05)  # both start together
r = train.cached_run('simple_cnn', root/'tiny', cfg, progress=False, recipe_overrides={'epochs': 1})
print(json.dumps({'cached': r['cached'], 'auroc': r['test']['auroc']}))
"""

def test_two_processes_asking_for_one_run_train_it_once(tiny, tmp_path):
    env = {**os.environ, 'FRACTURE_CACHE_DIR': str(tmp_path/'cache')}
    procs = [subprocess.Popen([sys.executable, '-c', RACER, str(tmp_path), me, other], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for me, other in (('a', 'b'), ('b', 'a'))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r['cached'] for r in results) == [False, True] and results[0]['auroc'] == results[1]['auroc'], results
    waited = next(out for (out, _), r in zip(outs, results) if r['cached'])
    assert 'Another process is training this run (simple_cnn-' in waited and 'waiting for it to finish' in waited
    runs = [p.name for p in (tmp_path/'cache'/'runs').iterdir()]
    assert len(runs) == 2 and sum(n.endswith('.lock') for n in runs) == 1  # the run and its lock; no scratch folder left

def test_a_kept_run_loads_without_waiting_for_its_lock_and_pruning_survives_a_lock_it_cannot_remove(tiny, small_cfg, monkeypatch, capsys):
    import threading
    first = _cached(tiny, small_cfg)
    folder = Path(first['paths']['checkpoint']).parent
    got = []
    with train.one_trainer(folder):  # another caller holds the lock (training, or checking): a kept run still loads at once
        t = threading.Thread(target=lambda: got.append(_cached(tiny, small_cfg))); t.start(); t.join(timeout=60)
    assert got and got[0]['cached'] and 'waiting' not in capsys.readouterr().out
    lock = train.run_lock(folder); os.utime(lock, (1e9, 1e9))  # a month unused: prune_runs removes it...
    real_unlink = Path.unlink
    def denied(self, *a, **k):
        if self.suffix == '.lock': raise PermissionError(13, 'Permission denied', str(self))  # ...unless it is another user's
        return real_unlink(self, *a, **k)
    monkeypatch.setattr(Path, 'unlink', denied)
    assert prune_runs(folder.parent) == [] and lock.exists()

def test_a_broken_kept_run_is_repaired_only_under_its_lock(tiny, small_cfg):
    import threading
    folder = Path(_cached(tiny, small_cfg)['paths']['checkpoint']).parent
    (folder/'metrics.json').write_text('{"cut')  # broken: it must be trained again, but only by the lock's holder
    got = []
    with train.one_trainer(folder):  # another process holds the lock
        t = threading.Thread(target=lambda: got.append(_cached(tiny, small_cfg))); t.start(); t.join(timeout=2)
        assert not got and (folder/'metrics.json').read_text() == '{"cut'  # it waits, and its unlocked look removed nothing
    t.join(timeout=120)
    assert got and not got[0]['cached'] and json.loads((folder/'metrics.json').read_text())['model'] == 'simple_cnn'

def test_cached_run_repairs_a_kept_run_missing_a_file_and_keeps_a_run_it_cannot_mark(tiny, small_cfg, monkeypatch):
    folder = Path(_cached(tiny, small_cfg)['paths']['checkpoint']).parent
    (folder/'best.pt').unlink()  # a user tidying up, or a copy cut short
    with pytest.warns(UserWarning, match='best.pt: .*training it again'): r = _cached(tiny, small_cfg)
    assert not r['cached'] and Path(r['paths']['checkpoint']).is_file() and Path(r['paths']['checkpoint']).parent == folder
    assert _cached(tiny, small_cfg)['cached']  # repaired: loaded from now on
    def no_utime(*a, **k): raise PermissionError(30, 'Read-only file system')
    monkeypatch.setattr(train.os, 'utime', no_utime)  # a cache shared read-only: the run still loads
    assert _cached(tiny, small_cfg)['cached'] and (folder/'best.pt').is_file()

def test_an_error_that_is_not_the_kept_runs_fault_leaves_it_in_place(tiny, small_cfg, monkeypatch):
    folder = Path(_cached(tiny, small_cfg)['paths']['checkpoint']).parent
    def full(*a, **k): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(train, 'run_loaders', full)
    with pytest.raises(OSError, match='No space left'): _cached(tiny, small_cfg)
    assert (folder/'best.pt').is_file() and (folder/'metrics.json').is_file()

def test_kept_runs_follow_the_umask_so_that_a_shared_cache_is_readable(tiny, small_cfg):
    old = os.umask(0o022)
    try: folder = Path(_cached(tiny, small_cfg)['paths']['checkpoint']).parent
    finally: os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755

def test_prune_runs_skips_an_entry_removed_while_it_looks(tmp_path, monkeypatch):
    runs = tmp_path/'runs'; (runs/'.a-1').mkdir(parents=True); (runs/'b').mkdir()
    real_stat = Path.stat
    def vanishing(self, *a, **k):
        if self.name == '.a-1': raise FileNotFoundError(2, 'No such file or directory', str(self))
        return real_stat(self, *a, **k)
    monkeypatch.setattr(Path, 'stat', vanishing)
    assert prune_runs(runs, days=0) == ['b']


def test_training_warns_once_about_colour_pictures(tmp_path):
    "predict and serve refuse colour pictures; training reads them as grey: it names them, once per process, from a cached measurement"
    import warnings
    from fracture_course.train import _as_data
    root = tmp_path/'ds'
    for s in ('train', 'val', 'test'):
        for k, c in enumerate(('fractured', 'not fractured')):
            (root/s/c).mkdir(parents=True)
            for i in range(3): Image.fromarray(np.random.default_rng(10 * k + i).integers(0, 256, (40, 40), dtype=np.uint8)).save(root/s/c/f'{i}.png')
    red = np.zeros((40, 40, 3), np.uint8); red[..., 0] = 200; Image.fromarray(red).save(root/'train'/'fractured'/'red.png')
    cfg = get_config('quick', cache_dir=str(tmp_path/'cache'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2): _as_data(root, cfg, progress=False)
    said = [str(w.message) for w in caught if 'colour picture' in str(w.message)]
    assert len(said) == 1 and 'red.png' in said[0] and (tmp_path/'cache'/'colour').is_dir()


def test_cli_train_refuses_a_size_the_network_cannot_take_before_reading_the_data(tmp_path, monkeypatch, capsys):
    "--size too small for the network's pools: refused by option, with the smallest side that works, before the dataset is read"
    from unittest import mock
    from fracture_course import train as T
    from fracture_course.cli import main
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    with mock.patch.object(T, '_as_data', side_effect=AssertionError('the data were read')):
        for model, size, least in (('simple_cnn', 7, 8), ('densenet121', 16, 32)):
            assert main(['train', '--model', model, '--size', str(size), '--data', str(tmp_path/'nowhere'), '--out', str(tmp_path/'o'), '--quiet']) == 1
            err = capsys.readouterr().err
            assert f'--size {size}: {model} cannot take inputs of {size} x {size} pixels' in err and f'use --size {least} or more' in err, err
    assert not (tmp_path/'o'/'best.pt').exists()


def test_a_model_the_meta_device_cannot_run_is_left_to_training():
    "check_input_sides refuses only when a larger side works: a forward pass that reads values (no meta run at any size) is not refused"
    from torch import nn
    from fracture_course.models import MODELS, register_model
    from fracture_course.train import check_input_sides, recipe_for
    @register_model('reads_values_test')
    class ReadsValues(nn.Module):
        def __init__(self, in_channels=1): super().__init__(); self.fc = nn.Linear(in_channels, 2)
        def forward(self, x):
            if x.std().item() > 1e9: raise ValueError('never')  # .item(): no meta tensor has a value
            return self.fc(x.mean((2, 3)))
    try:
        check_input_sides('reads_values_test', recipe_for('simple_cnn'), [64], 64)  # no error: training will tell
        with pytest.raises(ValueError, match='use --size 8 or more'): check_input_sides('simple_cnn', recipe_for('simple_cnn'), [4], 4)
    finally: MODELS.pop('reads_values_test', None)
