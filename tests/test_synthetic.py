"The synthetic radiographs: determinism, shapes, labels and boxes, the on-disk layout, knobs and bad arguments."
import argparse, copy, csv, json, os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fracture_course import synthetic as syn
from fracture_course.synthetic import (SynthSettings, SyntheticFractures, make_cases, render_case, write_synthetic_dataset,
                                       synthetic_dataset_ready, default_synthetic_dir, add_synth_args, synth_command,
                                       CLASSES, FRACTURE_TYPES, DIFFICULTIES, MANIFEST_COLUMNS, COMPLETE)


def images(st): return [render_case(c) for c in make_cases(st)]


def test_same_seed_same_bytes_other_seed_other_images():
    a, b = images(SynthSettings(n=12, size=64, seed=5)), images(SynthSettings(n=12, size=64, seed=5))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    c = images(SynthSettings(n=12, size=64, seed=6))
    assert sum(x.tobytes() != y.tobytes() for x, y in zip(a, c)) == 12


def test_image_i_does_not_depend_on_order_or_batch():
    st = SynthSettings(n=30, size=64, seed=3)
    cases = make_cases(st)
    forward = [render_case(c) for c in cases]
    backward = [render_case(c) for c in reversed(make_cases(st))][::-1]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(forward, backward))
    ds = SyntheticFractures(30, 64, seed=3)
    for i in (17, 2, 29):                                     # random access renders the same image
        assert ds.image(i).tobytes() == forward[i].tobytes()
    # the scene of image i is the same whatever its label: only the fracture differs
    clean, broken = syn.make_case(st, 4, 0), syn.make_case(st, 4, 1)
    assert clean.scene.bones[0] == broken.scene.bones[0] and clean.scene.noise_offset == broken.scene.noise_offset


def test_sizes_dtypes_and_value_range():
    for size in (32, 64, 96):
        img = images(SynthSettings(n=2, size=size, seed=1))[0]
        assert img.shape == (size, size) and img.dtype == np.uint8
    ds = SyntheticFractures(20, 48, seed=1)
    x, y = ds[3]
    assert x.shape == (1, 48, 48) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert isinstance(y, int) and y in (0, 1)
    X, Y = ds.tensors()
    assert X.shape == (20, 1, 48, 48) and Y.dtype == torch.int64 and torch.equal(X[3], x)
    assert syn.attenuation_map(ds.cases[0].scene, ds.cases[0].fractures).dtype == np.float32
    assert ds.image(3).std() > 5                               # not a blank image


def test_class_balance_and_fractured_frac():
    for frac, n in ((0.5, 200), (0.18, 500), (0.0, 50), (1.0, 50)):
        cases = make_cases(SynthSettings(n=n, size=32, seed=0, fractured_frac=frac))
        assert sum(c.true_label for c in cases) == round(n*frac)
        assert all(c.label == c.true_label for c in cases)     # no label noise by default


def test_every_fracture_has_boxes_inside_the_image_and_clean_images_none():
    st = SynthSettings(n=400, size=64, seed=11)
    cases = make_cases(st)
    types = set()
    for c in cases:
        if c.true_label:
            assert c.fracture_type in FRACTURE_TYPES and c.difficulty in DIFFICULTIES
            assert 1 <= len(c.boxes) == len(c.fractures) <= 2
            for x0, y0, x1, y1 in c.boxes:
                assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
                assert 0 <= x0 < x1 <= st.size and 0 <= y0 < y1 <= st.size
            types.add(c.fracture_type)
        else:
            assert c.boxes == [] and c.fractures == [] and c.fracture_type == 'none' and c.difficulty == 'none'
    assert types == set(FRACTURE_TYPES)


def test_the_fracture_changes_pixels_inside_its_box():
    "A box marks where the fracture is: a crack (nothing moved) changes pixels only inside its box; any fracture inside it"
    def changes(st):
        for c in make_cases(st)[:25]:
            diff = np.abs(render_case(c).astype(int) - syn.render(c.scene).astype(int)) > 8
            mask = np.zeros_like(diff)
            for x0, y0, x1, y1 in c.boxes: mask[y0:y1, x0:x1] = True
            assert diff.any(), 'an easy fracture must be visible'
            yield diff[mask].sum()/diff.sum()
    cracks = list(changes(SynthSettings(n=40, size=96, seed=2, fractured_frac=1.0, difficulty='easy', types='hairline')))
    assert min(cracks) > 0.9
    # a displaced fracture moves its whole fragment, so most changed pixels lie along the fragment, outside the box
    assert min(changes(SynthSettings(n=40, size=96, seed=2, fractured_frac=1.0, difficulty='easy'))) > 0.03


def test_windowed_rendering_equals_full_grid():
    "attenuation_map evaluates each fragment only near it: the result must equal evaluating everywhere"
    for c in make_cases(SynthSettings(n=40, size=80, seed=9, fractured_frac=1.0))[:20]:
        sc = copy.copy(c.scene); sc.marker = None
        X, Y = syn.pixel_grid(80)
        broken = {f.bone for f in c.fractures}
        ref = syn.attenuation_map(syn.Scene(80, [b for i, b in enumerate(sc.bones) if i not in broken], sc.tissues))
        for f in c.fractures:
            b = sc.bones[f.bone]; ref += syn.fractured_attenuation(*syn.to_local(X, Y, b.cx, b.cy, b.angle), b, f)
        assert np.abs(syn.attenuation_map(sc, c.fractures) - ref).max() < 1e-4


def test_blur_matches_torchvision():
    import torchvision.transforms.v2.functional as TF
    img = np.random.default_rng(0).random((30, 30), dtype=np.float32)
    for sigma in (0.6, 1.5):
        r = len(syn._gauss_kernel(sigma))//2
        ref = TF.gaussian_blur(torch.from_numpy(img)[None, None], [2*r + 1]*2, [sigma]*2)[0, 0].numpy()
        assert np.abs(syn.gaussian_blur(img, sigma) - ref)[r:-r, r:-r].max() < 1e-5


def test_on_disk_layout_and_manifest_agree(tmp_path):
    out = write_synthetic_dataset(tmp_path/'ds', n=80, size=48, seed=4, fractured_frac=0.25, label_noise=0.1, progress=False)
    rows = list(csv.DictReader(open(out/'manifest.csv')))
    assert tuple(rows[0]) == MANIFEST_COLUMNS and len(rows) == 80
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png'))
    assert on_disk == sorted(r['file'] for r in rows)
    for r in rows:
        split, label, name = r['file'].split('/')
        assert split == r['split'] in ('train', 'val', 'test') and label == r['label'] in CLASSES and r['true_label'] in CLASSES
        boxes = json.loads(r['boxes'])
        assert (r['true_label'] == 'fractured') == bool(boxes) == (r['fracture_type'] != 'none')
        assert r['marker'] in ('L', 'R', 'none')
    im = Image.open(out/rows[0]['file'])
    assert im.mode == 'L' and im.size == (48, 48)
    # the files hold exactly the in-memory images, in the same splits
    ds = SyntheticFractures(80, 48, seed=4, fractured_frac=0.25, label_noise=0.1, split='val')
    assert len(ds) == sum(r['split'] == 'val' for r in rows)
    c = ds.cases[0]
    f = next(r['file'] for r in rows if r['file'].endswith(f'synth_{c.index:05d}.png'))
    assert np.array_equal(np.asarray(Image.open(out/f)), ds.image(0)) and f.startswith('val/')
    # 70/15/15 split, stratified by the stored label
    for lab in CLASSES:
        k = [r['split'] for r in rows if r['label'] == lab]
        assert abs(k.count('train') - 0.7*len(k)) <= 1 and abs(k.count('val') - 0.15*len(k)) <= 1
    done = json.loads((out/COMPLETE).read_text())
    assert done['n'] == 80 and done['settings']['label_noise'] == 0.1


def test_half_written_folder_is_regenerated_and_finished_one_reused(tmp_path):
    st = SynthSettings(n=30, size=32, seed=1)
    out = write_synthetic_dataset(tmp_path/'ds', st, progress=False)
    stamp = (out/COMPLETE).stat().st_mtime_ns
    assert write_synthetic_dataset(out, st, progress=False) == out and (out/COMPLETE).stat().st_mtime_ns == stamp   # reused
    (out/COMPLETE).unlink()                                     # as if interrupted before the end
    victim = next(out.rglob('*.png')); victim.unlink()
    assert not synthetic_dataset_ready(out, st)
    write_synthetic_dataset(out, st, progress=False)
    assert synthetic_dataset_ready(out, st) and victim.is_file() and len(list(out.rglob('*.png'))) == 30
    # other settings in the same folder: refused, the dataset there kept; with overwrite, replaced without stale files
    with pytest.raises(ValueError, match=r"already holds another synthetic dataset, with n=30 \(asked 10\); .*pass overwrite=True to replace it"):
        write_synthetic_dataset(out, SynthSettings(n=10, size=32, seed=1), progress=False)
    with pytest.raises(ValueError, match=r"with label_noise=0.0 \(asked 0.1\);"):
        write_synthetic_dataset(out, SynthSettings(n=30, size=32, seed=1, label_noise=0.1), progress=False)
    assert synthetic_dataset_ready(out, st) and len(list(out.rglob('*.png'))) == 30
    done = json.loads((out/COMPLETE).read_text()); del done['settings']['off_centre']  # written before that knob existed
    (out/COMPLETE).write_text(json.dumps(done))
    assert write_synthetic_dataset(out, st, progress=False) == out and synthetic_dataset_ready(out, st)  # the same dataset: made again, not refused
    write_synthetic_dataset(out, SynthSettings(n=10, size=32, seed=1), progress=False, overwrite=True)
    assert len(list(out.rglob('*.png'))) == 10


def test_never_overwrites_a_folder_that_is_not_a_synthetic_dataset(tmp_path):
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('keep me')
    with pytest.raises(ValueError, match='not a synthetic dataset'):
        write_synthetic_dataset(tmp_path/'mine', n=5, size=32, progress=False)
    real = tmp_path/'real'/'train'/'fractured'; real.mkdir(parents=True); (real/'IMG001.jpg').write_bytes(b'x')
    with pytest.raises(ValueError, match='IMG001'):
        write_synthetic_dataset(tmp_path/'real', n=5, size=32, progress=False)
    assert (tmp_path/'mine'/'notes.txt').read_text() == 'keep me' and (real/'IMG001.jpg').is_file()


def test_default_synthetic_dir_generates_once_into_the_cache(tmp_path):
    from fracture_course.config import get_config
    cfg = get_config('quick', cache_dir=str(tmp_path), synthetic_n=24, synthetic_size=32, seed=7)
    p = default_synthetic_dir(cfg, progress=False)
    assert p == tmp_path/'synthetic'/SynthSettings(n=24, size=32, seed=7).name() and p.name.startswith('n24_s32_seed7_v')
    assert synthetic_dataset_ready(p) and len(list(p.rglob('*.png'))) == 24
    stamp = (p/COMPLETE).stat().st_mtime_ns
    assert default_synthetic_dir(cfg, progress=False) == p and (p/COMPLETE).stat().st_mtime_ns == stamp
    assert [q.name for q in p.parent.iterdir()] == [p.name]   # no temporary folders left


def test_label_noise_rate_is_roughly_as_asked():
    for rate in (0.0, 0.1, 0.3):
        cases = make_cases(SynthSettings(n=1000, size=32, seed=2, label_noise=rate))
        flipped = np.mean([c.label != c.true_label for c in cases])
        assert abs(flipped - rate) < 0.04, (rate, flipped)
    noisy = SyntheticFractures(200, 32, seed=2, label_noise=0.2)
    assert any(noisy[i][1] != noisy.meta(i)['true_label'] for i in range(len(noisy)))   # items carry the stored label


def test_marker_shortcut_correlation():
    def phi(m):
        cases = make_cases(SynthSettings(n=1500, size=32, seed=8, marker_shortcut=m, marker_frac=1.0))
        r = np.array([c.marker == 'R' for c in cases], float); t = np.array([c.true_label for c in cases], float)
        return np.corrcoef(r, t)[0, 1]
    assert abs(phi(0.0)) < 0.08 and abs(phi(0.5) - 0.5) < 0.08 and phi(1.0) == pytest.approx(1.0)
    cases = make_cases(SynthSettings(n=400, size=32, seed=8))
    marked = [c for c in cases if c.marker != 'none']
    assert 0.35 < len(marked)/len(cases) < 0.65 and all(c.scene.marker[0] == c.marker for c in marked)
    assert all(c.scene.marker is None for c in cases if c.marker == 'none')


@pytest.mark.parametrize('kw, match', [
    (dict(n=0), 'n .*at least 1'), (dict(n=-3), 'n .*at least 1'), (dict(n=2.5), 'n must be a whole number'),
    (dict(size=16), 'size must be at least 32'), (dict(size=60000), 'size must be at most 4096'), (dict(seed=-1), 'seed'),
    (dict(fractured_frac=1.2), 'fractured_frac.*between 0 and 1'), (dict(fractured_frac=-0.1), 'fractured_frac'),
    (dict(label_noise=2), 'label_noise'), (dict(label_noise=0.6), 'label_noise must be at most 0.5'), (dict(marker_shortcut=-0.5), 'marker_shortcut'), (dict(marker_frac=1.5), 'marker_frac'),
    (dict(difficulty='extreme'), 'difficulty'), (dict(difficulty={'easy': -1}), 'non-negative'),
    (dict(types={'greenstick': 1}), "unknown \\['greenstick'\\]"), (dict(difficulty=[1, 2]), 'needs 3 weights'),
    (dict(off_centre=0.5), 'off_centre must be at most 0.35'), (dict(off_centre=-0.1), 'off_centre.*between 0 and 1')])
def test_bad_arguments_raise_clear_value_errors(kw, match):
    with pytest.raises(ValueError, match=match): SynthSettings(**kw)


def test_bad_arguments_elsewhere(tmp_path):
    with pytest.raises(ValueError, match='split must be one of'): SyntheticFractures(10, 32, split='training')
    with pytest.raises(ValueError, match='unknown settings'): SyntheticFractures(10, 32, colour='red')
    with pytest.raises(ValueError, match='n .*at least 1'): SyntheticFractures(0, 32)
    (tmp_path/'f').write_text('x')
    with pytest.raises(ValueError, match='is a file'): write_synthetic_dataset(tmp_path/'f', n=3, size=32, progress=False)
    with pytest.raises(ValueError, match='no glyph'): syn.text_bitmap('Q?')


def test_mixes_accept_names_dicts_and_strings():
    assert SynthSettings(difficulty='hard').difficulty == (0, 0, 1)
    assert SynthSettings(difficulty='easy=1,hard=1').difficulty == (0.5, 0, 0.5)
    assert SynthSettings(types={'hairline': 2, 'oblique': 2}).types == (0, 0.5, 0, 0, 0.5)
    cases = make_cases(SynthSettings(n=60, size=32, fractured_frac=1.0, difficulty='hard', types='hairline'))
    assert {c.difficulty for c in cases} == {'hard'} and {c.fracture_type for c in cases} == {'hairline'}


def test_settings_name_encodes_settings():
    a = SynthSettings(n=100, size=64, seed=1)
    assert a.name().startswith('n100_s64_seed1_v') and a.name() == SynthSettings(n=100, size=64, seed=1).name()
    assert a.name() != SynthSettings(n=100, size=64, seed=1, label_noise=0.1).name()


def test_cli_synth_writes_and_reports(tmp_path, capsys):
    p = argparse.ArgumentParser(); add_synth_args(p)
    args = p.parse_args([str(tmp_path/'out'), '--n', '40', '--size', '32', '--seed', '3', '--fractured-frac', '0.25',
                         '--label-noise', '0.1', '--marker-shortcut', '1', '--difficulty', 'easy=1,medium=1', '--off-centre', '0.3', '--no-progress'])
    assert synth_command(args) == 0
    text = capsys.readouterr().out
    assert str((tmp_path/'out').resolve()) in text and 'train' in text and 'fractured' in text
    done = json.loads((tmp_path/'out'/COMPLETE).read_text())
    assert done['settings']['n'] == 40 and done['settings']['marker_shortcut'] == 1.0 and done['settings']['difficulty'] == [0.5, 0.5, 0]
    assert done['settings']['off_centre'] == 0.3
    assert sum(c['fractured'] + c['not fractured'] for c in done['counts'].values()) == 40
    with pytest.raises(ValueError, match='fractured_frac'):
        synth_command(p.parse_args([str(tmp_path/'bad'), '--n', '5', '--fractured-frac', '3', '--no-progress']))


def test_off_centre_spreads_the_fractures_and_its_default_changes_nothing(tmp_path):
    "The knob behind chapter 10's variant: wider spread, fractures still inside the image, the course's dataset untouched"
    st = SynthSettings(n=400, size=64, seed=4, fractured_frac=1.0)
    assert SynthSettings(n=400, size=64, seed=4, fractured_frac=1.0, off_centre=0.2).name() == st.name()
    wide = SynthSettings(n=400, size=64, seed=4, fractured_frac=1.0, off_centre=0.3)
    assert wide.name() != st.name()
    def box_centres(s):
        b = np.array([c.boxes[0] for c in make_cases(s) if c.boxes], float)
        return (b[:, :2] + b[:, 2:]) / 2, b
    (near, _), (far, boxes) = box_centres(st), box_centres(wide)
    dist = lambda p: np.hypot(*(p - 32).T)
    assert np.median(dist(far)) > np.median(dist(near)) + 2, (np.median(dist(near)), np.median(dist(far)))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    a = make_cases(SynthSettings(n=30, size=64, seed=4))[7]
    assert render_case(a).tobytes() == render_case(make_cases(SynthSettings(n=30, size=64, seed=4, off_centre=0.2))[7]).tobytes()
    from fracture_course.config import get_config
    cfg = get_config('quick', cache_dir=str(tmp_path), synthetic_n=24, synthetic_size=32, seed=7)
    p = default_synthetic_dir(cfg, progress=False, off_centre=0.3)
    assert p.name == SynthSettings(n=24, size=32, seed=7, off_centre=0.3).name() != default_synthetic_dir(cfg, progress=False).name
    assert json.loads((p/COMPLETE).read_text())['settings']['off_centre'] == 0.3

def test_a_dataset_is_planned_once_and_its_splits_share_the_plan():
    from fracture_course.synthetic import make_cases, SynthSettings
    st = SynthSettings(n=300, size=64, seed=7)
    a = make_cases(st); a.pop(); a[0].label = 1 - a[0].label  # callers get their own list and their own cases
    b = make_cases(SynthSettings(n=300, size=64, seed=7))
    assert len(b) == 300 and a[1:] == b[1:-1] and a[0] != b[0] and b[0].label == b[0].true_label
    assert all(x.scene is y.scene for x, y in zip(a, b))  # the same plan, not a new draw
    assert make_cases(SynthSettings(n=300, size=64, seed=8))[0] != b[0]
    splits = [SyntheticFractures(300, 64, 7, split=s) for s in ('train', 'val', 'test')]
    assert sum(len(s) for s in splits) == 300 and len({c.index for s in splits for c in s.cases}) == 300

def test_read_images_gives_the_rendered_pixels_and_refuses_other_settings(tmp_path):
    from fracture_course.synthetic import read_images, render_case, write_synthetic_dataset, SynthSettings
    out = write_synthetic_dataset(tmp_path/'ds', SynthSettings(n=40, size=48, seed=3), progress=False)
    ds = read_images(SyntheticFractures(40, 48, 3, split='val'), out)
    assert len(ds) > 0 and all(np.array_equal(ds.image(i), render_case(c)) for i, c in enumerate(ds.cases))
    assert ds.image(0).flags.writeable  # as rendered images are (torch warns about read-only arrays)
    with pytest.raises(ValueError, match='n40_s48_seed4'): read_images(SyntheticFractures(40, 48, 4), out)
    with pytest.raises(ValueError, match='does not hold'): read_images(SyntheticFractures(40, 48, 3), tmp_path/'missing')


def test_synth_explains_empty_splits_and_words_errors_for_its_caller(tmp_path, capsys):
    from fracture_course.cli import main
    from fracture_course.synthetic import SmallSplitWarning, split_gaps
    assert split_gaps(SynthSettings(n=3)) == (['val/ no image', 'test/ no not fractured image'], 12) and split_gaps(SynthSettings(n=12)) == ([], None)
    assert split_gaps(SynthSettings(n=10, fractured_frac=0))[1] is None
    with pytest.warns(SmallSplitWarning, match=r'val/ no image.*ask for n=12 or more'): write_synthetic_dataset(tmp_path/'s3', n=3, size=32, progress=False)
    assert main(['synth', str(tmp_path/'s0'), '--n', '10', '--size', '32', '--fractured-frac', '0', '--no-progress']) == 0
    assert 'makes every image one class' in capsys.readouterr().err
    assert main(['synth', str(tmp_path/'s3'), '--n', '20', '--size', '32', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'add --overwrite to replace it' in err and 'overwrite=True' not in err
    with pytest.raises(ValueError, match=r'or pass overwrite=True to replace it\.$'): write_synthetic_dataset(tmp_path/'s3', n=20, size=32, progress=False)
    blocker = tmp_path/'afile'; blocker.write_text('x')
    with pytest.raises(OSError, match=r'cannot create the folder .*afile/sub .*give a folder in a place you can write to'):
        write_synthetic_dataset(blocker/'sub', n=20, size=32, progress=False)
