"""`fracture_course.lightning`: DDP over gloo with two CPU processes (disjoint shards, identical weights, whole-split
validation, files written once, the same result as one process), one device against `train_run`, and bad input."""
import json, os, subprocess, sys, tempfile, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import bar_xrays
from fracture_course.config import get_config
from fracture_course.learner import load_checkpoint, read_checkpoint
from fracture_course.lightning import check_devices, fit_on_devices, history_from_csv, available_devices
from fracture_course.train import train_run

SCRIPT = textwrap.dedent('''
    "python ddp_run.py DATA OUT DEVICES: fit_on_devices from a script, as Lightning's 'ddp' needs (it runs this file again for rank 1)"
    import json, sys
    from pathlib import Path
    import lightning as L
    from fracture_course.config import get_config
    from fracture_course.lightning import fit_on_devices

    class RecordCB(L.Callback):
        "What each process saw: its training indices, the images it trained on and validated, and the weights"
        def on_train_epoch_start(self, trainer, module):
            self.rec = {'rank': trainer.global_rank, 'world_size': trainer.world_size, 'train_images': 0, 'valid_images': 0,
                        'indices': [int(i) for i in trainer.train_dataloader.sampler]}
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.rec['train_images'] += len(batch[1])
            if batch_idx == 0: self.rec['after_first_step'] = [p.detach().double().sum().item() for p in module.model.parameters()]
        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self.rec['valid_images'] += len(batch[1])
        def on_train_end(self, trainer, module):
            self.rec['final'] = [p.detach().double().sum().item() for p in module.model.parameters()]
            Path(sys.argv[2], f'rank{trainer.global_rank}.json').write_text(json.dumps(self.rec))

    if __name__ == '__main__':
        data, out, devices = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
        cfg = get_config('quick', epochs=1, image_size=32, batch_size=16, lr=3e-3)
        # SimpleCNN has no batch norm and no dropout, and 'none' augments nothing: DDP then computes exactly one process's steps
        r = fit_on_devices('simple_cnn', data, out, cfg, devices=devices, strategy='ddp', accelerator='cpu', progress=False,
                           recipe_overrides={'aug': 'none', 'epochs': 1}, callbacks=[RecordCB()], widths=(8, 16))
        print('RESULT', json.dumps({'global_rank': r.get('global_rank', 0), 'paths': r.get('paths')}))
''')

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "64 training images a class, 51 validation images (odd: two processes cannot split them evenly), 8 test images a class"
    root = bar_xrays(tmp_path_factory.mktemp('data')/'tiny', counts=(('train', 64), ('val', 25), ('test', 8)))
    Image.fromarray(np.full((40, 40), 30, np.uint8)).save(root/'val'/'not fractured'/'extra.png')
    return root

def _run(tiny, out:Path, devices:int, cache:Path) -> tuple[dict, list]:
    out.mkdir(parents=True)
    script = out.parent/f'ddp_run_{devices}.py'; script.write_text(SCRIPT)
    env = {**os.environ, 'FRACTURE_CACHE_DIR': str(cache)}
    env.pop('IN_TEST', None)
    r = subprocess.run([sys.executable, str(script), str(tiny), str(out), str(devices)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = [json.loads(l.split(' ', 1)[1]) for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    ranks = [json.loads((out/f'rank{i}.json').read_text()) for i in range(devices)]
    return results, ranks

@pytest.fixture(scope='module')
def runs(tiny, tmp_path_factory):
    "The same budget on two processes and on one, both with the 'ddp' strategy over gloo"
    tmp = tmp_path_factory.mktemp('ddp')
    return {n: (tmp/f'out{n}', *_run(tiny, tmp/f'out{n}', n, tmp/'cache')) for n in (2, 1)}

def test_each_rank_trains_on_a_disjoint_shard(runs, tiny):
    _, _, (r0, r1) = runs[2]
    assert r0['world_size'] == r1['world_size'] == 2 and (r0['rank'], r1['rank']) == (0, 1)
    assert not set(r0['indices']) & set(r1['indices'])
    assert sorted(r0['indices'] + r1['indices']) == list(range(128))  # together: every training image once
    assert r0['train_images'] == len(r0['indices']) == r1['train_images'] == 64

def test_weights_stay_identical_across_ranks(runs):
    _, _, (r0, r1) = runs[2]
    assert r0['after_first_step'] == r1['after_first_step'] and r0['final'] == r1['final']

def test_validation_covers_the_whole_split_once(runs):
    out, _, (r0, r1) = runs[2]
    assert r0['valid_images'] + r1['valid_images'] == 51 and {r0['valid_images'], r1['valid_images']} == {25, 26}
    m = json.loads((out/'metrics.json').read_text())
    assert m['history'][0]['n_valid_images'] == 51  # the synced count: each image once, none padded in twice

def test_files_are_written_once_by_rank_zero(runs):
    out, results, _ = runs[2]
    results = sorted(results, key=lambda r: r['global_rank'])  # rank 1 shares rank 0's stdout, in any order
    assert [r['global_rank'] for r in results] == [0, 1] and results[1]['paths'] is None and results[0]['paths']
    assert sorted(p.name for p in out.iterdir()) == ['best.pt', 'curves.png', 'lightning', 'metrics.json', 'rank0.json', 'rank1.json']
    assert [p.name for p in (out/'lightning'/'checkpoints').iterdir()] == ['best.ckpt']
    m = json.loads((out/'metrics.json').read_text())
    assert m['distributed']['world_size'] == 2 and m['distributed']['strategy'] == 'ddp' and m['distributed']['batch_per_device'] == 8
    model, info = load_checkpoint(out/'best.pt')  # what `fracture-course evaluate` and `predict` load
    assert info['arch'] == 'simple_cnn' and info['preprocessing']['size'] == 32 and model(torch.zeros(1, 1, 32, 32)).shape == (1, 2)
    op = read_checkpoint(out/'best.pt').get('operating_point')
    if op is not None: assert op['threshold'] == pytest.approx(m['threshold'])

def test_two_processes_match_one_at_equal_budget(runs):
    (out2, _, (a, _)), (out1, _, (c,)) = runs[2], runs[1]
    assert c['world_size'] == 1 and len(c['indices']) == 128
    assert np.allclose(a['final'], c['final'], rtol=1e-4, atol=1e-4)  # the same global batches, averaged gradients
    h2, h1 = (json.loads((o/'metrics.json').read_text())['history'][0] for o in (out2, out1))
    assert h2['train_loss'] == pytest.approx(h1['train_loss'], abs=1e-5) and h2['valid_loss'] == pytest.approx(h1['valid_loss'], abs=1e-4)

FORK = textwrap.dedent("""
    import json, sys
    from fracture_course.config import get_config
    from fracture_course.lightning import fit_on_devices
    cfg = get_config('quick', epochs=1, image_size=32, batch_size=16, lr=3e-3)
    r = fit_on_devices('simple_cnn', sys.argv[1], sys.argv[2], cfg, devices=2, strategy='ddp_notebook', accelerator='cpu', progress=False,
                       recipe_overrides={'aug': 'none', 'epochs': 1}, widths=(8, 16))
    print('RESULT', json.dumps({k: r[k] for k in ('history', 'distributed', 'paths')}))
""")

def test_ddp_notebook_forks_and_matches_ddp(runs, tiny, tmp_path):
    "Kaggle's strategy (fork; no script started again): the main process gets the weights back, evaluates and writes"
    script = tmp_path/'fork.py'; script.write_text(FORK)
    env = {**os.environ, 'FRACTURE_CACHE_DIR': str(tmp_path/'cache')}
    p = subprocess.run([sys.executable, str(script), str(tiny), str(tmp_path/'out')], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(next(l for l in p.stdout.splitlines() if l.startswith('RESULT '))[7:])
    assert r['distributed']['world_size'] == 2 and r['distributed']['strategy'] == 'ddp_notebook' and (tmp_path/'out'/'best.pt').is_file()
    ddp = json.loads((runs[2][0]/'metrics.json').read_text())['history'][0]
    assert r['history'][0]['train_loss'] == pytest.approx(ddp['train_loss'], abs=1e-6) and r['history'][0]['n_valid_images'] == 51

def test_one_device_matches_train_run(tiny, tmp_path, monkeypatch):
    "On one device the data module hands Lightning the Learner's own loaders: the same budget gives the same run"
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    cfg = get_config('quick', epochs=2, image_size=32, batch_size=16, lr=3e-3)
    two = {'epochs': 2}  # the quick simple_cnn recipe trains 14 epochs of its own
    ours = fit_on_devices('simple_cnn', tiny, tmp_path/'l', cfg, accelerator='cpu', progress=False, recipe_overrides=two, widths=(8, 16))
    ref = train_run('simple_cnn', tiny, tmp_path/'t', cfg, progress=False, recipe_overrides=two, widths=(8, 16))
    assert set(ref) - {'learner'} <= set(ours) and ours['best_epoch'] in (1, 2)
    assert set(ref['history'][0]) <= set(ours['history'][0]), set(ref['history'][0]) - set(ours['history'][0])  # the Learner's metrics, precision and F1 too
    assert ours['history'][0]['valid_f1'] == pytest.approx(ref['history'][0]['valid_f1'], abs=1e-4)
    first, second = zip(ours['history'], ref['history'])
    assert first[0]['train_loss'] == pytest.approx(first[1]['train_loss'], abs=1e-6)  # the first epoch: the same steps
    # from the second epoch the shuffles differ (see the next test): train loss 0.01365 against 0.01393 at epoch 2, measured
    for a, b in (first, second):
        assert a['train_loss'] == pytest.approx(b['train_loss'], rel=0.05, abs=1e-4) and a['valid_auroc'] == pytest.approx(b['valid_auroc'], abs=1e-4)
    assert ours['test']['auroc'] == pytest.approx(ref['test']['auroc'], abs=0.02)
    assert history_from_csv(tmp_path/'l'/'lightning'/'stage0'/'metrics.csv') == ours['history']

def test_without_out_the_run_leaves_no_folder_behind(tiny, tmp_path, monkeypatch):
    "out=None: Lightning's logs and checkpoints go to a temporary folder, read back and then deleted"
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path/'tmp')); (tmp_path/'tmp').mkdir()
    cfg = get_config('quick', epochs=1, image_size=32, batch_size=16, lr=3e-3)
    r = fit_on_devices('simple_cnn', tiny, None, cfg, accelerator='cpu', progress=False, recipe_overrides={'epochs': 1}, widths=(8, 16))
    assert len(r['history']) == 1 and r['best_epoch'] == 1 and 'paths' not in r  # the history and best epoch were read from the folder
    assert list((tmp_path/'tmp').iterdir()) == []

def test_in_a_log_each_epoch_is_a_line_not_a_progress_bar(tiny, tmp_path, monkeypatch, capfd):
    "Output to a file (here pytest's capture, no terminal): Lightning's bar is off, and the module prints a line per epoch"
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    class Tty:  # stderr on a terminal, stdout to a file (`train ... > log`): Lightning's bar writes to stdout, so it must be off
        def __init__(self, s): self.s = s
        def isatty(self): return True
        def __getattr__(self, k): return getattr(self.s, k)
    monkeypatch.setattr(sys, 'stderr', Tty(sys.stderr))
    cfg = get_config('quick', epochs=2, image_size=32, batch_size=16, lr=3e-3)
    r = fit_on_devices('simple_cnn', tiny, None, cfg, accelerator='cpu', progress=True, recipe_overrides={'epochs': 2}, widths=(8, 16))
    out, err = capfd.readouterr()
    assert '\r' not in out and 'it/s' not in out, out[-2000:]  # no bar redrawn line after line in the file (stderr's bars are a terminal's)
    lines = [l for l in out.splitlines() if l.startswith('epoch ')]
    assert [l.split()[1] for l in lines] == ['1/2', '2/2'], out[-2000:]
    for line, h in zip(lines, r['history']):  # the values the run logged
        assert f"train_loss {h['train_loss']:.4f}" in line and f"auroc {h['valid_auroc']:.4f}" in line, (line, h)

def test_why_the_second_epoch_differs():
    "A for loop asks a loader for one batch past its end, and RandomSampler draws a permutation from the loader's generator to answer; Lightning stops at len()"
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(torch.arange(48)), batch_size=16, shuffle=True, generator=g)
    it = iter(dl)
    for _ in range(len(dl)): next(it)  # Lightning's way: exactly len(dl) batches
    after_len, spare = g.get_state(), torch.Generator(); spare.set_state(g.get_state())
    assert next(it, None) is None  # a for loop's way: one more request, which ends the epoch ...
    assert not torch.equal(g.get_state(), after_len)  # ... and costs the generator a permutation
    torch.randperm(48, generator=spare); assert torch.equal(g.get_state(), spare.get_state())


def test_too_many_devices():
    n = available_devices('cpu')
    with pytest.raises(ValueError, match=rf"{n + 1} devices were asked for but this machine has {n} CPU cores.*--devices {n} or fewer"):
        check_devices(n + 1, 'ddp', 'cpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='no cuda device.*--accelerator cpu'): fit_on_devices('simple_cnn', devices=1, accelerator='cuda')

def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown strategy 'dpp'. Valid strategies: auto, ddp, ddp_fork, ddp_notebook"):
        fit_on_devices('simple_cnn', strategy='dpp')

def test_strategies_and_precisions_that_cannot_finish_are_refused_before_training(tiny, tmp_path):
    "ddp_spawn hung (a seeded torch.Generator does not pickle); bf16-true trained to the end, then failed to evaluate, writing no best.pt"
    with pytest.raises(ValueError, match="strategy 'ddp_spawn' cannot send the course's seeded data loaders.*use 'ddp'"):
        check_devices(2, 'ddp_spawn', 'cpu', interactive=False)
    for p in ('bf16-true', '16-true', '64-true', 'half'):
        with pytest.raises(ValueError, match=f"precision '{p}': the course trains with 32-true, 32, bf16-mixed, 16-mixed"):
            fit_on_devices('simple_cnn', tiny, tmp_path/'p', precision=p, accelerator='cpu', progress=False)
        assert not (tmp_path/'p').exists()

def test_plain_ddp_in_a_notebook_points_to_ddp_notebook():
    with pytest.raises(ValueError, match="In a notebook use strategy='ddp_notebook'.*fracture-course train --devices N --strategy ddp"):
        check_devices(2, 'ddp', 'cpu', interactive=True)
    assert check_devices(2, 'ddp_notebook', 'cpu', interactive=True) == ('cpu', 2, 'ddp_notebook')
    assert check_devices(2, 'auto', 'cpu', interactive=False) == ('cpu', 2, 'ddp')

def test_bad_devices_and_recipes():
    for bad in (0, 'two'):
        with pytest.raises(ValueError, match='devices must'): check_devices(bad, accelerator='cpu')
    with pytest.raises(ValueError, match='weight averaging'):
        fit_on_devices('simple_cnn', accelerator='cpu', recipe_overrides={'ema': 0.99})

def test_history_from_csv_folds_rows_and_skips_test_rows(tmp_path):
    f = tmp_path/'metrics.csv'
    f.write_text('epoch,step,lr-Adam,valid_loss,valid_auroc,n_valid_images,train_loss,lr,time,test_auroc\n'
                 '0,0,0.001,,,,,,,\n0,9,,0.6,0.7,51.0,,,,\n0,9,,,,,0.65,0.001,2.0,\n1,19,,0.5,0.8,51.0,,,,\n1,19,,,,,0.55,0.0001,2.1,\n'
                 '2,19,,,,,,,,0.75\n')
    h = history_from_csv(f)
    assert [r['epoch'] for r in h] == [1, 2] and h[1] == {'epoch': 2, 'train_loss': 0.55, 'valid_loss': 0.5, 'valid_auroc': 0.8,
                                                          'n_valid_images': 51, 'lr': 0.0001, 'time': 2.1}


def test_precision_is_undefined_when_no_image_is_called_fractured_as_in_the_learner():
    "torchmetrics gives 0; the Learner's binary_metrics gives NaN: the two paths' histories now agree"
    import math
    from fracture_course.lightning import FractureModule
    from fracture_course.learner import binary_metrics
    class Says(torch.nn.Module):  # logits that call every image 'not fractured', or every image 'fractured'
        def __init__(self, margin): super().__init__(); self.margin = margin
        def forward(self, x): return torch.tensor([[0., self.margin]]).expand(len(x), 2)
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
    for margin in (-3., 3.):
        m, logged = FractureModule(Says(margin)), {}
        m.log_dict = lambda d, **kw: logged.update(d)
        m._step((x, y), 'valid'); m._log_split('valid')
        want = binary_metrics(torch.full((4,), 1 / (1 + math.exp(-margin))), y, 0.5)
        assert math.isnan(logged['valid_precision']) == math.isnan(want['precision']) and (margin < 0) == math.isnan(want['precision'])
        if margin > 0: assert logged['valid_precision'] == pytest.approx(want['precision'])
        assert logged['valid_f1'] == pytest.approx(want['f1'])
