"Data loading: every layout the course names, every kind of bad file, splits, the audit, and the real FracAtlas."
import json, math, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from fracture_course.data import (CLASSES, Item, TruncatedImage, UnreadableImage, DamagedImageWarning, DataWarning, audit, label_from_name,
                                  load_dataset, load_image, split_items, read_manifest, trivial_baseline, resolve_source)
from fracture_course.config import get_config

def img(path, size=(40, 32), seed=0, **kw):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, size[::-1], dtype=np.uint8)
    Image.fromarray(a).save(path, **kw); return path

def tree(root, splits, classes=('fractured', 'not fractured'), n=5, ext='.jpg', seed=0):
    for s in splits:
        for k, c in enumerate(classes):
            for i in range(n): img(Path(root, s, c, f'{k}_{i}{ext}'), seed=seed + 1000*k + 100*len(s) + i)
    return Path(root)

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch): monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))

def test_label_names_map_fractured_to_positive_class():
    assert CLASSES[1] == 'fractured'
    for n in ['fractured', 'Fractured', 'fracture', 'FRACTURED']: assert label_from_name(n) == 1
    for n in ['not fractured', 'Non_fractured', 'no_fracture', 'not-fractured', 'normal']: assert label_from_name(n) == 0
    assert label_from_name('images') is None

def test_multi_region_layout_nested_with_space_and_mixed_extensions(tmp_path):
    root = tmp_path/'Bone_Fracture_Binary_Classification'/'Bone_Fracture_Binary_Classification'
    tree(root, ['train', 'val', 'test'], n=4)
    img(root/'train'/'fractured'/'x.png', seed=99); img(root/'train'/'fractured'/'y.jpeg', seed=98)
    d = load_dataset(tmp_path)
    assert d.counts() == {'train': {'not fractured': 4, 'fractured': 6}, 'valid': {'not fractured': 4, 'fractured': 4},
                          'test': {'not fractured': 4, 'fractured': 4}}
    assert all((o.label == 1) == (o.path.parent.name == 'fractured') for o in d.items)

def test_devbatrax_layout_val_becomes_test_and_valid_is_carved_from_train(tmp_path):
    d = load_dataset(tree(tmp_path/'dv', ['train', 'val'], n=20))
    c = d.counts()
    assert c['test'] == {'not fractured': 20, 'fractured': 20}
    assert c['valid'] == {'not fractured': 2, 'fractured': 2} and c['train'] == {'not fractured': 18, 'fractured': 18}
    assert 'test set' in d.notes[0]

def test_class_folders_without_split_get_stratified_70_10_20(tmp_path):
    root = tree(tmp_path/'foyez', [''], classes=('fractured', 'not fractured'), n=40)
    d = load_dataset(root)
    for s, n in [('train', 28), ('valid', 4), ('test', 8)]:
        assert d.counts()[s] == {'not fractured': n, 'fractured': n}
    again = load_dataset(root)
    assert [o.split for o in d.items] == [o.split for o in again.items]
    other = load_dataset(root, seed=7)
    assert [o.split for o in d.items] != [o.split for o in other.items]

def test_identical_files_never_straddle_splits(tmp_path):
    root = tree(tmp_path/'dup', [''], n=30)
    src = root/'fractured'/'0_0.jpg'
    for i in range(6): (root/'fractured'/f'copy{i}.jpg').write_bytes(src.read_bytes())
    for seed in range(5):
        d = load_dataset(root, seed=seed)
        assert len({o.split for o in d.items if o.path.read_bytes() == src.read_bytes()}) == 1

def test_fracatlas_layout_with_metadata_boxes_and_label_conflicts(tmp_path):
    r = tmp_path/'FracAtlas'
    rows = ['image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique']
    for i in range(10):
        cls = 'Fractured' if i < 4 else 'Non_fractured'
        img(r/'images'/cls/f'IMG{i:07d}.jpg', seed=i)
        csv_label = 1 if i < 4 or i == 9 else 0   # IMG0000009 disagrees with its folder
        rows.append(f'IMG{i:07d}.jpg,{int(i%2==0)},{int(i%2==1)},0,0,0,0,0,{csv_label},{int(i<4)},1,0,0')
        (r/'Annotations'/'YOLO').mkdir(parents=True, exist_ok=True)
        (r/'Annotations'/'YOLO'/f'IMG{i:07d}.txt').write_text('0 0.5 0.5 0.2 0.4\n' if i < 4 else '')
    (r/'dataset.csv').write_text('\n'.join(rows) + '\n')
    d = load_dataset(r)
    assert d.name == 'FracAtlas' and len(d) == 10 and sum(o.label for o in d.items) == 4
    f = next(o for o in d.items if o.path.name == 'IMG0000000.jpg')
    assert f.meta['region'] == 'hand' and f.meta['boxes_norm'] == [[0.4, 0.3, 0.6, 0.7]]
    rep = audit(d)
    assert [c['path'].endswith('IMG0000009.jpg') for c in rep.label_disagreements] == [True]

def test_csv_manifest_with_and_without_split(tmp_path):
    for i in range(8): img(tmp_path/'im'/f'{i}.png', seed=i)
    (tmp_path/'m.csv').write_text('path,label,split,site\n' + ''.join(
        f'im/{i}.png,{"fractured" if i%2 else "normal"},{"train" if i<6 else "test"},A\n' for i in range(8)))
    d = load_dataset(tmp_path/'m.csv')
    assert d.counts()['test'] == {'not fractured': 1, 'fractured': 1} and d.items[0].meta['site'] == 'A'  # other columns kept as metadata
    (tmp_path/'n.csv').write_text('path,label\nim/0.png,1\nim/1.png,0\nim/gone.png,1\n')
    d = read_manifest(tmp_path/'n.csv')
    assert len(d) == 2 and 'gone.png' in d.skipped[0]['path'] and 'missing' in d.skipped[0]['reason']
    (tmp_path/'bad.csv').write_text('path,label\nim/0.png,maybe\n')
    with pytest.raises(ValueError, match='bad.csv line 2'): read_manifest(tmp_path/'bad.csv')
    (tmp_path/'nolabel.csv').write_text('path,diagnosis\nim/0.png,1\n')
    with pytest.raises(ValueError, match="'label' column"): read_manifest(tmp_path/'nolabel.csv')

def test_empty_or_unrecognised_layouts_name_the_path_and_the_layouts(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match=r'No fracture dataset layout found in .*empty[\s\S]*split folders'): load_dataset(tmp_path/'empty')
    with pytest.raises(FileNotFoundError, match='FRACTURE_DATASET'): load_dataset(tmp_path/'nowhere')
    tree(tmp_path/'one', ['train', 'test'], classes=('fractured',))
    (tmp_path/'one'/'train'/'cats').mkdir()
    with pytest.raises(ValueError, match="one folder per class.*Images without labels cannot be trained or tested on: move them out, or list the labelled ones in a CSV manifest"): load_dataset(tmp_path/'one')

def test_bad_files_load_with_warnings_or_are_reported(tmp_path):
    d = tmp_path/'bad'
    g = img(d/'grey.png')
    img(d/'full.jpg', size=(200, 160), quality=95)
    (d/'trunc.jpg').write_bytes((d/'full.jpg').read_bytes()[:1500])
    (d/'zero.png').write_bytes(b'')
    (d/'text.jpg').write_text('not an image')
    a16 = (np.arange(40*32).reshape(32, 40) * 50).astype(np.uint16)
    Image.fromarray(a16).save(d/'deep.png')
    Image.fromarray(np.zeros((32, 40, 4), np.uint8)).save(d/'rgba.png')
    Image.open(g).convert('P').save(d/'pal.png')
    Image.open(g).convert('CMYK').save(d/'cmyk.jpg')
    im = Image.fromarray(np.zeros((20, 60), np.uint8)); ex = im.getexif(); ex[0x0112] = 6  # rotated 90 degrees
    im.save(d/'exif.jpg', exif=ex)
    Image.fromarray(np.zeros((5000, 3000), np.uint8)).save(d/'huge.png')
    for f in ['grey.png', 'deep.png', 'rgba.png', 'pal.png', 'cmyk.jpg']:
        out = load_image(d/f); assert out.mode == 'L' and out.size == (40, 32), f
    deep = np.asarray(load_image(d/'deep.png')); assert deep.min() == 0 and deep.max() == 255
    assert load_image(d/'exif.jpg').size == (20, 60)
    assert max(load_image(d/'huge.png').size) == 2048 and load_image(d/'huge.png', max_side=None).size == (3000, 5000)
    with pytest.warns(DamagedImageWarning, match='trunc.jpg.*truncated'): load_image(d/'trunc.jpg')
    (d/'head.jpg').write_bytes((d/'trunc.jpg').read_bytes()[:78])  # cut inside its header: no pixel at all
    with pytest.raises(UnreadableImage, match='head.jpg: the file ends inside its header'): load_image(d/'head.jpg')
    from PIL import ImageFile
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as a write-up did, for the whole process: a decision about one image still refuses a cut file
    try:
        with pytest.raises(TruncatedImage): load_image(d/'trunc.jpg', partial=False)
    finally: ImageFile.LOAD_TRUNCATED_IMAGES = False
    for f, why in [('zero.png', 'empty file'), ('text.jpg', 'not an image')]:
        with pytest.raises(UnreadableImage, match=f'{f}.*{why}'): load_image(d/f)

def test_audit_finds_unreadable_damaged_duplicates_leaks_and_stray_files(tmp_path):
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=4)
    src = root/'train'/'fractured'/'0_0.jpg'
    (root/'test'/'fractured'/'leak.jpg').write_bytes(src.read_bytes())
    Image.open(src).save(root/'val'/'fractured'/'resaved.png')          # same picture, other bytes
    (root/'test'/'not fractured'/'zero.jpg').write_bytes(b'')
    img(root/'train'/'not fractured'/'big.jpg', size=(300, 300), quality=95)
    (root/'train'/'not fractured'/'cut.jpg').write_bytes((root/'train'/'not fractured'/'big.jpg').read_bytes()[:3000])
    (root/'train'/'fractured'/'readme.txt').write_text('x')
    img(root/'test'/'fractured'/'icon.png', size=(20, 300)); img(root/'test'/'fractured'/'just.png', size=(32, 32))
    rep = audit(root)
    assert [Path(u['path']).name for u in rep.unreadable] == ['zero.jpg']
    assert [(Path(u['path']).name, u['width'], u['height']) for u in rep.too_small] == [('icon.png', 20, 300)]
    assert 'too small to score (under 32 px a side): 1' in rep.summary() 
    assert f"  too small:\n    {root/'test'/'fractured'/'icon.png'}: 20 x 300 pixels\n    what to do: predict, serve and evaluate refuse" in rep.summary()
    assert [Path(p).name for p in rep.damaged] == ['cut.jpg']
    assert len(rep.duplicates) == 1 and len(rep.leaks()) == 1
    assert any({Path(o['path']).name for o in g} >= {'resaved.png'} for g in rep.near_duplicates)
    assert rep.skipped[0]['path'].endswith('readme.txt')
    assert rep.counts['train']['fractured'] == 4 and 'exact duplicate groups: 1 (1 across splits, 0 with different labels)' in rep.summary()
    assert rep.damaged_by_class == {'not fractured': 1} and 'decoded only partly: 1 (not fractured 1)' in rep.summary()
    lines = rep.summary().splitlines()
    leak = lines[lines.index('  across splits:') + 1]  # the leaking copies, named, and what to do
    assert any(l.startswith('    what to do: leakage') for l in lines[lines.index('  across splits:'):])
    assert f"{src} (train, fractured)" in leak and f"{root/'test'/'fractured'/'leak.jpg'} (test, fractured)" in leak
    json.dumps(rep.to_dict()); assert 'hashes' not in rep.to_dict() and len(rep.hashes) == 24 + 6  # every decoded file's hashes kept (not zero.jpg), not written
    loose = rep.with_near_bits(64)  # every pair of pictures within 64 bits: one group of all but the byte-identical copy
    assert len(loose.near_duplicates) == 1 and len(loose.near_duplicates[0]) == len(rep.hashes) and loose.duplicates == rep.duplicates

def test_trivial_baseline_on_imbalanced_items():
    items = [Item(Path(f'{i}'), int(i < 18)) for i in range(100)]
    assert trivial_baseline(items) == {'predicts': 'not fractured', 'accuracy': 0.82, 'sensitivity': 0.0, 'specificity': 1.0, 'auroc': 0.5}
    one_class = trivial_baseline([o for o in items if o.label == 0])  # sensitivity and AUROC are undefined without a fracture
    assert one_class['specificity'] == 1.0 and math.isnan(one_class['sensitivity']) and math.isnan(one_class['auroc'])
    assert math.isnan(trivial_baseline([])['accuracy'])
    healthy_test = [o for o in items if o.label == 0][:5] + [o for o in items if o.label == 1][:5]  # a balanced split, scored...
    from_train = trivial_baseline(healthy_test, majority_of=[Item(Path('f'), 1)] * 3)  # ...against a training split of fractures
    assert from_train['predicts'] == 'fractured' and from_train['sensitivity'] == 1.0 and from_train['specificity'] == 0.0

def test_data_source_resolution(tmp_path, monkeypatch):
    assert resolve_source(get_config(dataset='synthetic')) == ('synthetic', None)
    assert resolve_source(get_config(dataset=str(tmp_path))) == ('path', tmp_path)
    import fracture_course.data as D
    monkeypatch.setattr(D, 'KAGGLE_INPUT', tmp_path/'input')
    assert resolve_source(get_config(dataset='auto')) == ('synthetic', None)
    tree(tmp_path/'input'/'fracture-detection-using-x-ray-images', ['train', 'val'], n=2)
    kind, p = resolve_source(get_config(dataset='auto'))
    assert kind == 'kaggle' and p.name == 'fracture-detection-using-x-ray-images'
    assert resolve_source(get_config(dataset='kaggle:devbatrax/fracture-detection-using-x-ray-images'))[1] == p

def test_real_fracatlas_loads_and_audits(fracatlas_dir):
    d = load_dataset(fracatlas_dir)
    assert len(d) == 3211 and d.counts()['test']['fractured'] > 0 and not d.skipped
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always', DamagedImageWarning)
        for o in d.items: load_image(o.path)
    assert len(w) == 48
    rep = audit(d)
    assert len(rep.duplicates) == 8 and not rep.leaks() and not rep.leaks('near_duplicates') and not rep.unreadable
    assert rep.damaged_by_class == {'not fractured': 48}  # every truncated file is healthy: a shortcut chapter 2 warns of
    assert rep.seconds < 60
    groups = lambda r: sorted(sorted(o['path'] for o in g) for g in r.near_duplicates)
    two = rep.with_near_bits(2)  # regrouped from the kept hashes, as a second audit at --near-bits 2 would find (64 groups, 10 across splits)
    assert groups(two) == groups(audit(d, near_bits=2)) and len(two.near_duplicates) == 64 and len(two.leaks('near_duplicates')) == 10
    assert groups(rep.with_near_bits(0)) == groups(rep) and two.duplicates == rep.duplicates

def test_audit_cli_writes_json(tmp_path):
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=2)
    cli = str(Path(sys.executable).parent/'fracture-course')
    r = subprocess.run([cli, 'audit', str(root), '--json', str(tmp_path/'a.json')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'Audit of' in r.stdout and json.loads((tmp_path/'a.json').read_text())['counts']['test']['fractured'] == 2
    r = subprocess.run([cli, 'audit', str(tmp_path/'nope')], capture_output=True, text=True)
    assert r.returncode == 1 and 'nope' in r.stderr

def test_audit_describes_the_split_train_draws_with_the_settings_seed(tmp_path, monkeypatch):
    "An unsplit dataset: the audit's split is the one `train` draws, FRACTURE_SEED included (it was always seed 42)"
    import argparse
    from fracture_course.data import audit_command, add_audit_args, split_digest
    root = tree(tmp_path/'unsplit', [''], n=20)
    monkeypatch.setenv('FRACTURE_SEED', '7')
    p = argparse.ArgumentParser(); add_audit_args(p)
    assert audit_command(p.parse_args([str(root), '--json', str(tmp_path/'a7.json')])) == 0
    seven, fortytwo = (split_digest(load_dataset(root, seed=s)) for s in (7, 42))
    assert seven != fortytwo and json.loads((tmp_path/'a7.json').read_text())['split_digest'] == seven
    assert audit_command(p.parse_args([str(root), '--seed', '42', '--json', str(tmp_path/'a42.json')])) == 0
    assert json.loads((tmp_path/'a42.json').read_text())['split_digest'] == fortytwo

def test_audit_names_copies_of_one_picture_with_different_labels(tmp_path):
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3)
    src = next((root/'train'/'fractured').iterdir())
    (root/'val'/'not fractured'/'same.jpg').write_bytes(src.read_bytes())  # the same picture, filed as not fractured
    rep = audit(root)
    assert len(rep.mixed_labels()) == 1 and {o['label'] for o in rep.mixed_labels()[0]} == {'fractured', 'not fractured'}
    assert '1 with different labels' in rep.summary() and 'same.jpg (not fractured)' in rep.summary()
    assert len(rep.to_dict()['duplicates_with_mixed_labels']) == 1

def test_a_manifest_named_dataset_csv_beside_images_is_read_as_a_manifest(tmp_path):
    "Not every dataset.csv next to images/ is FracAtlas's: one with path and label columns is a manifest"
    root = tmp_path/'mine'
    for i in range(6):
        img(root/'images'/f'f{i}.png', seed=i); img(root/'images'/f'n{i}.png', seed=50 + i)
    (root/'dataset.csv').write_text('path,label\n' + ''.join(f'images/f{i}.png,1\nimages/n{i}.png,0\n' for i in range(6)))
    d = load_dataset(root)
    assert len(d) == 12 and sum(o.label for o in d.items) == 6 and not d.skipped

def test_manifest_labels_written_as_floats_and_a_clear_error_for_others(tmp_path):
    for i in range(4): img(tmp_path/f'a{i}.png', seed=i)
    (tmp_path/'m.csv').write_text('path,label\na0.png,1.0\na1.png,0.0\na2.png,1.0\na3.png,0.0\n')  # pandas writes 1.0 when a column has gaps
    assert sorted(o.label for o in read_manifest(tmp_path/'m.csv').items) == [0, 0, 1, 1]
    (tmp_path/'bad.csv').write_text('path,label\na0.png,maybe\n')
    with pytest.raises(ValueError, match=r"bad.csv line 2: label 'maybe'.*write 1 or 0"): read_manifest(tmp_path/'bad.csv')

def test_a_manifest_with_train_and_test_rows_gets_a_validation_split_carved_from_train(tmp_path):
    "As split folders without val/ do: the threshold and the best epoch need a validation split"
    rows = []
    for i in range(20):
        img(tmp_path/f't{i}.png', seed=i); rows.append(f't{i}.png,{i % 2},train')
    for i in range(6):
        img(tmp_path/f's{i}.png', seed=100 + i); rows.append(f's{i}.png,{i % 2},test')
    (tmp_path/'m.csv').write_text('path,label,split\n' + '\n'.join(rows) + '\n')
    d = read_manifest(tmp_path/'m.csv')
    c = d.counts()
    assert sum(c['valid'].values()) == 2 and sum(c['train'].values()) == 18 and sum(c['test'].values()) == 6
    assert any("carved out for validation" in n for n in d.notes)

def test_kaggle_dataset_found_in_newer_nested_mount(tmp_path, monkeypatch):
    import fracture_course.data as D
    monkeypatch.setattr(D, 'KAGGLE_INPUT', tmp_path/'input')
    root = tmp_path/'input'/'datasets'/'foyez767'/'x-ray-images-of-fractured-and-healthy-bones'
    tree(root, [''], n=3)
    kind, p = resolve_source(get_config(dataset='kaggle:foyez767/x-ray-images-of-fractured-and-healthy-bones'))
    assert (kind, p) == ('kaggle', root)
    assert resolve_source(get_config(dataset='kaggle:foyez767/x-ray-images-of-fractured-and-healthy-bones/versions/2')) == ('kaggle', root)
    assert resolve_source(get_config(dataset='kaggle:someone/absent'))[1] is None


def test_manifest_as_spreadsheets_write_it_and_its_errors_name_the_line(tmp_path):
    "Excel's 'CSV UTF-8' (a byte-order mark, capitalised headers) reads; a partial or unknown split, bad boxes, another encoding or no rows are refused with the file and line"
    from PIL import Image
    from fracture_course.data import read_manifest
    for i in range(4): Image.new('L', (8, 8), 40 * i).save(tmp_path/f'x{i}.png')
    rows = [f'x{i}.png,{"fractured" if i % 2 else "not fractured"},{s}' for i, s in enumerate(['train', 'train', 'test', 'test'])]
    (tmp_path/'excel.csv').write_bytes(('\ufeffPath,Label,Split\r\n' + '\r\n'.join(rows) + '\r\n').encode('utf-8'))
    d = read_manifest(tmp_path/'excel.csv')
    assert len(d.items) == 4 and [o.split for o in d.items] == ['train', 'train', 'test', 'test'] and not d.notes
    def refused(text, match, encoding='utf-8'):
        (tmp_path/'m.csv').write_bytes(text.encode(encoding))
        with pytest.raises(ValueError, match=match) as e: read_manifest(tmp_path/'m.csv')
        assert 'm.csv' in str(e.value)
    refused('path,label,split\n' + '\n'.join(rows[:3]) + '\nx3.png,fractured,holdout\n', "line 5: split 'holdout' is not one of")
    refused('path,label,split\n' + '\n'.join(rows[:3]) + '\nx3.png,fractured,\n', "line 5: split '' is not one of")
    refused('path,label,boxes\nx0.png,fractured,oops\n', "line 2: boxes 'oops' is not JSON")
    refused('path,label\nx0.png,fractured\ncaf\u00e9.png,fractured\n', 'not UTF-8', encoding='latin-1')
    refused('path,label\n', 'no rows')
    (tmp_path/'none.csv').write_text('path,label,split\n' + '\n'.join(r.rsplit(',', 1)[0] + ',' for r in rows) + '\n')
    assert read_manifest(tmp_path/'none.csv').notes  # an empty split column: the course splits


def test_a_file_listed_twice_is_read_once_and_two_labels_for_it_are_refused(tmp_path):
    "A repeated row is named among the skipped (nothing silent); one file with two labels is refused with both lines"
    from PIL import Image
    from fracture_course.data import read_manifest
    for i in range(2): Image.new('L', (8, 8), 40 * i).save(tmp_path/f'x{i}.png')
    (tmp_path/'twice.csv').write_text('path,label,split\nx0.png,fractured,train\nx1.png,not fractured,train\n./x0.png,fractured,test\n')
    d = read_manifest(tmp_path/'twice.csv')
    assert [(o.path.name, o.split) for o in d.items] == [('x0.png', 'train'), ('x1.png', 'train')]
    assert d.skipped == [{'path': str(tmp_path/'x0.png'), 'reason': 'listed again in twice.csv line 4 (first on line 2); read once; kept in train, not test'}]
    (tmp_path/'clash.csv').write_text('path,label\nx0.png,fractured\nx1.png,not fractured\nx0.png,not fractured\n')
    with pytest.raises(ValueError, match=r'clash.csv lines 2 and 4 give .*x0.png two labels \(fractured, not fractured\)'):
        read_manifest(tmp_path/'clash.csv')

def test_train_refuses_a_split_with_one_class_before_training(tmp_path, monkeypatch):
    "A validation split without fractures (no threshold can be chosen on it) or a one-class training split: refused before any epoch, naming the split"
    from conftest import bar_xrays
    from fracture_course.config import get_config
    from fracture_course.train import train_run
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    for split in ('val', 'train'):
        root = bar_xrays(tmp_path/split, (('train', 4), ('val', 4), ('test', 4)))
        for f in (root/split/'fractured').glob('*.png'): f.unlink()
        name = 'valid' if split == 'val' else 'train'
        with pytest.raises(ValueError, match=f"the {name} split has {{'not fractured': 4, 'fractured': 0}}; it needs both classes"):
            train_run('simple_cnn', root, tmp_path/'out', get_config('quick', epochs=1, image_size=32), progress=False)


def test_train_on_a_dataset_without_training_images_says_so(tmp_path, monkeypatch):
    "Class folders with no images in them: a clear error naming the dataset, not an error from deep inside PyTorch"
    from fracture_course.config import get_config
    from fracture_course.train import train_run
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    for c in ('fractured', 'not fractured'): (tmp_path/'empty'/c).mkdir(parents=True)
    (tmp_path/'empty'/'fractured'/'readme.txt').write_text('no images here')
    with pytest.raises(ValueError, match=r'empty: no usable image; 1 file\(s\) skipped: 1 x not an image file \(.txt\) \(the first: .*readme.txt\)'):
        train_run('simple_cnn', tmp_path/'empty', None, get_config('quick', epochs=1, image_size=32), progress=False)


def test_audit_json_path_is_checked_before_the_audit(tmp_path, capsys):
    "--json into a folder, or into a folder that does not exist: a clear error naming the option, and no audit run"
    import argparse
    from conftest import bar_xrays
    from fracture_course.data import add_audit_args, audit_command
    data = bar_xrays(tmp_path/'d', (('train', 2), ('val', 2), ('test', 2)))
    p = argparse.ArgumentParser(); add_audit_args(p)
    for target, why in ((tmp_path, 'is a folder'), (tmp_path/'nowhere'/'a.json', 'its folder does not exist')):
        with pytest.raises(ValueError, match=f'--json .*{why}'): audit_command(p.parse_args([str(data), '--json', str(target)]))
    assert capsys.readouterr().out == ''
    assert audit_command(p.parse_args([str(data), '--json', str(tmp_path/'a.json')])) == 0 and json.loads((tmp_path/'a.json').read_text())


def test_audit_json_never_replaces_a_file_of_the_dataset(tmp_path):
    "--json the dataset's own manifest (or another of its files) is refused and the file kept; an earlier report may be replaced"
    import argparse, shutil
    from fracture_course.data import add_audit_args, audit_command
    from fracture_course.synthetic import write_synthetic_dataset
    data = write_synthetic_dataset(tmp_path/'ds', n=20, size=32, progress=False)
    manifest = (data/'manifest.csv').read_text(); (data/'notes.json').write_text('{"mine": 1}')
    p = argparse.ArgumentParser(); add_audit_args(p)
    for target, why in ((data/'manifest.csv', 'must end in .json'), (tmp_path/'copy.csv', 'must end in .json'),
                        (data/'notes.json', "belongs to the dataset .*write the report outside the dataset's folder")):
        if target.name == 'copy.csv': shutil.copy(data/'manifest.csv', target)
        for path in (data, data/'manifest.csv'):
            with pytest.raises(ValueError, match=f'--json .*{why}'): audit_command(p.parse_args([str(path), '--json', str(target)]))
    assert (data/'manifest.csv').read_text() == manifest and (data/'notes.json').read_text() == '{"mine": 1}'
    for _ in range(2): assert audit_command(p.parse_args([str(data), '--json', str(data/'audit.json')])) == 0  # a report it wrote may be replaced


def test_a_manifest_row_with_missing_fields_is_named(tmp_path):
    "A row shorter than the header (no path, or no label) is an error naming the line, not a TypeError"
    from conftest import bar_xrays
    root = bar_xrays(tmp_path/'d', (('train', 2), ('val', 2), ('test', 2)))
    f = next(root.rglob('*.png')).relative_to(root)
    (root/'m.csv').write_text(f'label,path\nfractured,{f}\nfractured\n')
    with pytest.raises(ValueError, match=r"m.csv line 3: no 'path' value \(the row has fewer fields"): load_dataset(root/'m.csv')
    (root/'m.csv').write_text(f'path,label\n{f},fractured\n{f}\n')
    with pytest.raises(ValueError, match=r"m.csv line 3: no 'label' value"): load_dataset(root/'m.csv')


def test_a_decompression_bomb_is_refused_with_advice(tmp_path, monkeypatch):
    "An image claiming more pixels than Pillow decodes: the reason, and what to do if the X-ray is genuine"
    from PIL import Image
    from fracture_course.data import UnreadableImage, load_image
    Image.new('L', (64, 64)).save(tmp_path/'huge.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # 4,096 pixels > 2 x 1,000: Pillow's error rather than its warning
    with pytest.raises(UnreadableImage, match=r'huge.png: Image size \(4096 pixels\) exceeds .* downscale it \(any image editor will\), or, from Python, raise PIL.Image.MAX_IMAGE_PIXELS'):
        load_image(tmp_path/'huge.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 3000)  # between 1 and 2 x the limit: Pillow only warns, and its warning names no file
    with pytest.warns(Image.DecompressionBombWarning, match=r"huge.png: 4,096 pixels, more than Pillow's decompression-bomb limit of 3,000"):
        assert load_image(tmp_path/'huge.png').size == (64, 64)
    import warnings
    from concurrent.futures import ThreadPoolExecutor
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True), ThreadPoolExecutor(8) as ex: list(ex.map(lambda _: load_image(tmp_path/'huge.png'), range(64)))
    assert warnings.filters == filters  # loading in threads leaves the process's warning filters as they were


def test_partial_false_refuses_a_cut_file_while_other_threads_flip_pillows_switch(tmp_path):
    "Pillow's LOAD_TRUNCATED_IMAGES is one switch for the process: with it on globally, or flipped by threads reading truncated files for training, a decision about one image still refuses a cut file"
    import threading
    from PIL import Image, ImageFile
    from fracture_course.data import TruncatedImage, load_image
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1000), dtype=np.uint8)).save(tmp_path/'big.jpg', quality=95)
    data = (tmp_path/'big.jpg').read_bytes(); (tmp_path/'cut.jpg').write_bytes(data[:len(data) * 2 // 3])
    scored, refused = [], []
    def decide():
        for _ in range(15):
            try: load_image(tmp_path/'cut.jpg', partial=False, max_side=None); scored.append(1)
            except TruncatedImage: refused.append(1)
    def train():
        for _ in range(15): load_image(tmp_path/'cut.jpg', warn=False, max_side=None)
    for switch_on, jobs in ((True, [decide] * 6), (False, [decide] * 3 + [train] * 3)):
        ImageFile.LOAD_TRUNCATED_IMAGES = switch_on
        try:
            ts = [threading.Thread(target=j) for j in jobs]
            for t in ts: t.start()
            for t in ts: t.join()
        finally: ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert scored == [] and len(refused) == 135


def test_nothing_under_a_dataset_folder_is_left_out_without_a_word(tmp_path):
    "A misspelt class folder, a loose image, a dangling link, another dataset beside it: each is listed in skipped; two folders for one split are refused"
    import os, shutil
    from conftest import bar_xrays
    root = bar_xrays(tmp_path/'multi'/'a', (('train', 4), ('val', 2), ('test', 2)))
    one = next((root/'train'/'fractured').glob('*.png'))
    (root/'train'/'Fracturd').mkdir(); shutil.copy(one, root/'train'/'Fracturd'/'x.png')
    shutil.copy(one, root/'train'/'loose.png'); shutil.copy(one, root/'stray.png'); (root/'README.md').write_text('not an image')
    os.symlink(root/'nowhere.png', root/'train'/'fractured'/'dangling.png')
    extra = tmp_path/'more'; extra.mkdir(); shutil.copy(one, extra/'y.png'); os.symlink(extra, root/'train'/'fractured'/'batch2')
    os.symlink(root/'train'/'fractured', root/'train'/'fractured'/'loop')  # a link loop ends
    bar_xrays(tmp_path/'multi'/'b', (('train', 2), ('val', 2), ('test', 2)))
    d = load_dataset(tmp_path/'multi')
    why = {Path(s['path']).name: s['reason'] for s in d.skipped}
    assert "folder 'Fracturd' in the train/ split is not a class folder" in why['Fracturd'] and '1 image(s) were not read' in why['Fracturd']
    assert 'an image in the train/ split but not in a class folder' in why['loose.png'] and 'but not in a split folder' in why['stray.png']
    assert why['dangling.png'] == 'a link to a file that does not exist' and 'another dataset beside' in why['b']
    assert 'README.md' not in why  # not an image: nothing was lost
    assert any(o.path.name == 'y.png' for o in d.items)  # a linked folder is read
    assert sum(o.split == 'train' and o.label == 1 for o in d.items) == 4 + 1  # its own and the linked one; the loop adds nothing
    assert f"\n    {root/'train'/'Fracturd'}: folder 'Fracturd'" in audit(d).summary() and '\n  skipped:\n' in audit(d).summary()  # the audit's report names them
    shutil.copytree(root/'val', root/'validation')
    with pytest.raises(ValueError, match=r"several folders hold the same split \(valid: \['val', 'validation'\]\)"): load_dataset(root)


def test_fracatlas_rows_without_images_and_images_without_rows_are_said(tmp_path):
    "A copy whose dataset.csv and images/ disagree: a row naming no file is skipped with its line, an image with no row is noted"
    root = tmp_path/'FracAtlas'
    for i, cls in enumerate(['Fractured', 'Fractured', 'Non_fractured', 'Non_fractured']): img(root/'images'/cls/f'IMG{i}.jpg', seed=i)
    (root/'dataset.csv').write_text('image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured\n'
                                    'IMG0.jpg,1,0,0,0,0,0,0,1\nIMG2.jpg,1,0,0,0,0,0,0,0\nIMG3.jpg,0,1,0,0,0,0,0,0\n'
                                    'IMG9.jpg,1,0,0,0,0,0,0,1\n')  # no row for IMG1; a row for IMG9, which is not there
    d = load_dataset(root)
    assert len(d) == 4 and [(Path(s['path']).name, s['reason']) for s in d.skipped] == [('IMG9.jpg', 'listed in dataset.csv line 5 but missing')]
    assert any('1 image(s) have no row in dataset.csv' in n and 'IMG1.jpg' in n for n in d.notes)
    summary = audit(d).summary()
    assert 'IMG9.jpg: listed in dataset.csv line 5 but missing' in summary and 'note: 1 image(s) have no row' in summary

def test_a_fracatlas_table_that_cannot_be_split_into_columns_is_named_not_read_as_class_folders(tmp_path):
    "FracAtlas's images/ holds class folders: a dataset.csv saved with ';' (Excel in Europe), or with a stray byte in a row, must not turn it into a plain class-folder set"
    from PIL import Image
    root = tmp_path/'FracAtlas'
    for cls, name in (('Fractured', 'IMG1.jpg'), ('Non_fractured', 'IMG2.jpg')):
        (root/'images'/cls).mkdir(parents=True); Image.new('L', (40, 40), 100).save(root/'images'/cls/name)
    (root/'dataset.csv').write_text('image_id;hand;fractured\nIMG1.jpg;1;1\nIMG2.jpg;0;0\n')
    with pytest.raises(ValueError, match=r"dataset.csv has no \['fractured', 'image_id'\] column"): load_dataset(root)
    (root/'dataset.csv').write_bytes(b'image_id,hand,fractured\nIMG1.jpg,1,1\nIMG2.jpg,0,0\xe9\n')  # a byte that is no UTF-8, in a row
    with pytest.raises(ValueError) as e: load_dataset(root)
    assert 'dataset.csv' in str(e.value)  # FracAtlas's reader names its table, rather than the images/ folder loading as class folders

def test_a_sibling_whose_split_folders_cannot_be_read_does_not_hide_a_readable_dataset(tmp_path, monkeypatch):
    import fracture_course.data as D
    tree(tmp_path/'sib'/'ds', ['train', 'val', 'test'], n=3)
    tree(tmp_path/'sib'/'old_copy', ['train', 'val', 'test'], n=3)
    real = D._class_dirs
    def unreadable(d):
        if 'old_copy' in str(d) and d.name in ('train', 'val', 'test'): raise D._cannot_read(d, PermissionError(13, 'Permission denied'))
        return real(d)
    monkeypatch.setattr(D, '_class_dirs', unreadable)
    d = load_dataset(tmp_path/'sib')
    assert d.root == tmp_path/'sib'/'ds' and len(d) == 18

def test_a_damaged_fracatlas_csv_is_named_with_its_line(tmp_path):
    "A renamed column or a flag other than 0/1 in FracAtlas's dataset.csv: an error naming the file (and line), not a bare KeyError"
    from PIL import Image
    root = tmp_path/'FracAtlas'
    for cls, name in (('Fractured', 'IMG1.jpg'), ('Non_fractured', 'IMG2.jpg')):
        (root/'images'/cls).mkdir(parents=True); Image.new('L', (40, 40), 100).save(root/'images'/cls/name)
    def write(header, *rows): (root/'dataset.csv').write_text('\n'.join([header, *rows]) + '\n')
    write('image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured', 'IMG1.jpg,1,0,0,0,0,0,0,1', 'IMG2.jpg,0,1,0,0,0,0,0,0')
    d = load_dataset(root)
    assert sorted(o.meta['csv_label'] for o in d.items) == [0, 1] and {o.meta['region'] for o in d.items} == {'hand', 'leg'}
    write('image,hand,fractured', 'IMG1.jpg,1,1')
    with pytest.raises(ValueError, match=r"dataset.csv has no \['image_id'\] column"): load_dataset(root)
    write('image_id,hand,fractured', 'IMG1.jpg,1,yes', 'IMG2.jpg,0,0')
    with pytest.raises(ValueError, match=r"dataset.csv line 2: fractured is 'yes'; FracAtlas marks it 0 or 1"): load_dataset(root)
    write('image_id,hand,fractured', 'IMG1.jpg,1,1', 'IMG2.jpg,0,')
    with pytest.raises(ValueError, match=r"line 3: fractured is ''"): load_dataset(root)


def test_images_with_several_frames_or_pixels_that_are_no_numbers_are_refused(tmp_path):
    "An animated GIF or a multi-page TIFF was scored on its first frame without a word; a float TIFF with one NaN as a blank image"
    frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path/'cine.gif', save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path/'pages.tif', save_all=True, append_images=frames[1:])
    for name, fmt in (('cine.gif', 'GIF'), ('pages.tif', 'TIFF')):
        with pytest.raises(UnreadableImage, match=f'{name}: 3 frames \\({fmt}\\): the course reads single radiographs; save the frame'):
            load_image(tmp_path/name)
    frames[0].save(tmp_path/'phone.mpo', 'MPO', save_all=True, append_images=frames[1:2])  # a phone's photo and its preview
    assert Image.open(tmp_path/'phone.mpo').n_frames == 2 and load_image(tmp_path/'phone.mpo').size == (40, 40)
    a = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    Image.fromarray(a).save(tmp_path/'float.tif')
    assert np.asarray(load_image(tmp_path/'float.tif')).max() == 255
    for bad in (np.nan, np.inf):
        b = a.copy(); b[3, 3] = bad; Image.fromarray(b).save(tmp_path/'hole.tif')
        with pytest.raises(UnreadableImage, match=r'hole\.tif: 1 of 1600 pixels are not numbers \(NaN or infinite\); export the image again'):
            load_image(tmp_path/'hole.tif')

def test_files_that_cannot_be_opened_are_left_out_by_name_not_met_in_training(tmp_path):
    "A 0-byte file or one cut inside its header would stop a training run half-way (Kaggle's input cannot be edited): load_dataset names and skips them"
    from fracture_course.data import load_dataset
    from fracture_course.transforms import ImageCache, grey_preset
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=4)
    (root/'train'/'fractured'/'zero.png').write_bytes(b'')
    (root/'train'/'not fractured'/'head.jpg').write_bytes((root/'train'/'fractured'/'0_0.jpg').read_bytes()[:300])
    data = load_dataset(root)
    reasons = {Path(s['path']).name: s['reason'] for s in data.skipped}
    assert reasons['zero.png'] == 'empty file (0 bytes); re-download or delete it' and 'head.jpg' in reasons and len(data.split('train')) == 8
    assert not {'zero.png', 'head.jpg'} & {o.path.name for o in data.items}
    assert len(ImageCache(data.split('train'), grey_preset(32)).arr) == 8  # decodes every item left

def test_split_folders_in_other_spellings_and_an_original_set_before_its_augmented_copies(tmp_path):
    "training_data/testing_data are splits, not two datasets; 'Original Dataset' is read, not 'Augmented Dataset' beside it (its copies would leak across a random split)"
    from fracture_course.data import load_dataset, split_of
    assert [split_of(n) for n in ('Training_data', 'test set', 'VAL', 'validation-images', 'trainer')] == ['train', 'test', 'valid', 'valid', None]
    data = load_dataset(tree(tmp_path/'e', ['training_data', 'testing_data'], classes=('fractured', 'not_fractured'), n=3))
    n = {s: sum(v.values()) for s, v in data.counts().items()}
    assert n['test'] == 6 and n['train'] + n.get('valid', 0) == 6 and data.root.name == 'e', data.counts()
    assert data.notes == ["no validation folder: 10% of 'training_data/' is carved out for validation"]
    root = tmp_path/'X-ray Imaging Dataset'
    tree(root/'Augmented Dataset', [''], classes=('Fractured', 'Non-Fractured'), n=4); tree(root/'Original Dataset', [''], classes=('Fractured', 'Non-Fractured'), n=2)
    data = load_dataset(root)
    assert data.root.name == 'Original Dataset' and len(data) == 4
    assert any(s['path'].endswith('Augmented Dataset') and 'augmented copies' in s['reason'] for s in data.skipped), data.skipped

def test_kaggle_mounts_under_datasets_owner_name_and_an_attached_folder_in_an_unknown_layout(tmp_path, monkeypatch, capsys):
    "auto finds a doubly wrapped dataset at /kaggle/input/datasets/OWNER/NAME; kaggle:OWNER/NAME names an attached folder it cannot read instead of calling it missing"
    import fracture_course.data as D
    from fracture_course.data import load_course_data
    monkeypatch.setattr(D, 'KAGGLE_INPUT', tmp_path/'input')
    wrapped = tmp_path/'input'/'datasets'/'owner'/'multi-region'/'Bone_Fracture'/'Bone_Fracture'
    tree(wrapped, ['train', 'val'], n=3)
    assert resolve_source(get_config(dataset='auto')) == ('kaggle', tmp_path/'input'/'datasets'/'owner'/'multi-region')
    data = load_course_data(get_config(dataset='auto'))
    out = capsys.readouterr().out
    assert f"(read: {wrapped})" in out and "note: no test folder" in out, out  # the folder read, and how the splits were made
    (tmp_path/'input'/'bone-xrays'/'images').mkdir(parents=True); (tmp_path/'input'/'bone-xrays'/'labels.txt').write_text('x')
    kind, found = resolve_source(get_config(dataset='kaggle:someone/bone-xrays'))
    assert (kind, found) == ('kaggle', tmp_path/'input'/'bone-xrays')
    with pytest.raises(ValueError, match='No fracture dataset layout found in .*bone-xrays'): load_course_data(get_config(dataset='kaggle:someone/bone-xrays'))

def test_audit_takes_what_train_takes(tmp_path, monkeypatch, capsys):
    "No PATH: the configured dataset; 'synthetic' and kaggle:OWNER/NAME as train reads them; a missing path is named without advice that does not apply"
    from fracture_course.cli import main
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache')); monkeypatch.setenv('FRACTURE_SYNTHETIC_N', '120')
    monkeypatch.setenv('FRACTURE_PROFILE', 'quick'); monkeypatch.setenv('FRACTURE_DATASET', 'synthetic')
    assert main(['audit', '--json', '-']) == 0
    counts = json.loads(capsys.readouterr().out)['counts']
    assert sum(sum(v.values()) for v in counts.values()) == 120
    assert main(['audit', 'synthetic']) == 0 and 'Audit of synthetic' in capsys.readouterr().out
    assert main(['audit', str(tmp_path/'nope')]) == 1
    assert "does not exist; give the folder (or CSV manifest) of a dataset" in capsys.readouterr().err

def test_notes_for_a_one_class_split_a_fracatlas_images_folder_and_an_unusable_path(tmp_path):
    "What a student would otherwise find out from an AUROC of n/a, a lost region split, or a failed run"
    from fracture_course.data import load_dataset, describe_source
    root = tree(tmp_path/'c', ['train', 'test'], n=3)
    for f in (root/'test'/'fractured').iterdir(): f.unlink()
    notes = load_dataset(root).notes  # train/ and test/: validation carved from train, and test has one class; both said
    assert any("'test/' holds no fractured image" in n for n in notes) and any(n.startswith('no validation folder') for n in notes), notes
    fa = tmp_path/'FracAtlas'; tree(fa/'images', [''], classes=('Fractured', 'Non_fractured'), n=3); (fa/'dataset.csv').write_text('image_id,fractured\n')
    assert any("looks like FracAtlas's images folder: point at" in n for n in load_dataset(fa/'images').notes)
    (tmp_path/'empty').mkdir()
    assert 'NO DATASET LAYOUT FOUND' in describe_source(get_config(dataset=str(tmp_path/'empty')))
    assert 'NO DATASET LAYOUT FOUND' not in describe_source(get_config(dataset=str(root)))

def test_a_split_too_small_for_every_part_says_which_part_is_empty(tmp_path):
    for i in range(4): Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(tmp_path/f'{i}.png')
    items = [Item(tmp_path/f'{i}.png', i % 2) for i in range(4)]
    with pytest.warns(DataWarning, match=r'4 images( \(\d distinct picture\(s\)\))? are too few for a 70/10/20 split: the (valid and )?test splits? gets? none'): split_items(items, cache_dir=tmp_path/'c')


def test_auto_names_attached_datasets_it_cannot_read_and_the_others_it_could_have_chosen(tmp_path, monkeypatch):
    "An attached dataset in an unknown layout was replaced by the synthetic data without a word; of two readable ones, one was taken in silence"
    import fracture_course.data as D
    from fracture_course.data import describe_source, load_course_data
    monkeypatch.setattr(D, 'KAGGLE_INPUT', tmp_path/'input')
    monkeypatch.setenv('FRACTURE_SYNTHETIC_N', '120')
    yolo = tmp_path/'input'/'bone-fracture-detection'
    for s in ('train', 'valid'): img(yolo/s/'images'/'a.jpg'); (yolo/s/'labels').mkdir(); (yolo/s/'labels'/'a.txt').write_text('0 0.5 0.5 0.1 0.1\n')
    (tmp_path/'input'/'models'/'someone'/'weights').mkdir(parents=True)  # a model attached too: not a dataset
    auto = get_config(dataset='auto', profile='quick')
    assert resolve_source(auto) == ('synthetic', None)
    said = describe_source(auto)
    assert 'no real dataset configured or attached' not in said and f'{yolo} is attached but in no layout the course reads' in said
    assert f'fracture-course audit {yolo}' in said and 'FRACTURE_DATASET' in said and 'models' not in said
    with pytest.warns(DataWarning, match=f"the built-in synthetic radiographs are used: {yolo} is attached but in no layout"):  # a course note, not a plain UserWarning
        assert load_course_data(auto, verbose=False).name == 'synthetic'
    multi = tree(tmp_path/'input'/'fracture-multi-region-x-ray-data'/'Bone'/'Bone', ['train', 'val', 'test'], n=2)
    mine = tree(tmp_path/'input'/'datasets'/'me'/'my-xrays', ['train', 'val', 'test'], n=2)
    assert resolve_source(auto) == ('kaggle', mine)
    said = describe_source(auto)
    assert f'2 datasets the course reads are attached; {mine} is used' in said, said
    assert 'FRACTURE_DATASET to kaggle:bmadushanirodrigo/fracture-multi-region-x-ray-data' in said  # its owner, from the datasets the course names
    with pytest.warns(DataWarning, match="2 datasets the course reads are attached"):
        assert load_course_data(auto, verbose=False).root == mine
    assert load_course_data(get_config(dataset='kaggle:bmadushanirodrigo/fracture-multi-region-x-ray-data'), verbose=False).root == multi


def test_a_dataset_beside_the_one_read_is_named_in_the_summary(tmp_path, monkeypatch, capsys):
    "Two datasets in one folder: the one not read was only in data.skipped; load_course_data's summary names it"
    from fracture_course.data import load_course_data
    tree(tmp_path/'two'/'a', ['train', 'val', 'test'], n=2); tree(tmp_path/'two'/'b', ['train', 'val', 'test'], n=2)
    load_course_data(get_config(dataset=str(tmp_path/'two')))
    out = capsys.readouterr().out
    assert f"note: not read, beside it: {tmp_path/'two'/'b'} (another dataset: point at it to use it)" in out, out


def _damaged_png(src, dst):
    "A copy of PNG `src` with one byte of its pixel data changed: its header reads, its checksum fails, its decode stops"
    b = bytearray(Path(src).read_bytes()); b[-20] ^= 0xFF; Path(dst).write_bytes(b); return Path(dst)

def test_files_whose_pixels_cannot_be_decoded_are_left_out_at_load_not_met_in_training(tmp_path):
    "A multi-frame GIF, multi-frame, colour or cut DICOMs passed the header check and stopped `train` at the image cache; "
    "a PNG whose body is damaged passes the (header-only) check and the image cache names it, with what to do"
    from fracture_course.data import LeftOutWarning, write_dicom, header_problem
    from fracture_course.transforms import ImageCache, grey_preset
    root = tree(tmp_path/'ds', [''], n=6, ext='.png')
    f, n = root/'fractured', root/'not fractured'
    _damaged_png(f/'0_0.png', f/'damaged.png')
    frames = [Image.fromarray(np.full((40, 40), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(n/'cine.gif', save_all=True, append_images=frames[1:])
    write_dicom(np.zeros((3, 40, 40), np.uint8), f/'series.dcm')
    write_dicom(np.zeros((40, 40, 3), np.uint8), f/'colour.dcm', photometric='RGB')
    whole = write_dicom(np.arange(1600, dtype=np.uint16).reshape(40, 40), n/'whole.dcm')
    (n/'cut.dcm').write_bytes(whole.read_bytes()[:-300])
    with pytest.warns(LeftOutWarning, match='could not be opened and were left out'):
        data = load_dataset(root)
    why = {Path(s['path']).name: s['reason'] for s in data.skipped}
    assert 'damaged.png' not in why and why['cine.gif'].startswith('3 frames (GIF)')  # a PNG's body is not read at load (a whole read of every file)
    assert why['series.dcm'].startswith('multi-frame DICOM (3 frames)') and why['colour.dcm'].startswith('colour DICOM (RGB')
    assert why['cut.dcm'].startswith('the file ends inside its pixel data') and all(s.get('unreadable') for s in data.skipped)
    assert len(data) == 14 and header_problem(whole) is None  # the 12 PNGs, the damaged one and the whole DICOM stay
    with pytest.raises(ValueError, match=r"1 image\(s\) do not decode: .*damaged.png \(damaged image.*`fracture-course audit DATASET --manifest "):
        ImageCache(data.items, grey_preset(32))  # decodes every item, as `train` does: the damaged body named, with what to do
    from fracture_course.cli import main
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); assert main(['audit', str(root), '--manifest', str(tmp_path/'kept.csv')]) == 0  # what the message says to do
        kept = load_dataset(tmp_path/'kept.csv')
    assert 'damaged.png' not in {o.path.name for o in kept.items} and len(ImageCache(kept.items, grey_preset(32)).arr) == 13
    cut = bytearray((f/'0_1.png').read_bytes()); (f/'half.png').write_bytes(cut[:len(cut) // 2])  # a cut PNG stays: it loads partly
    assert header_problem(f/'half.png') is None

def test_the_audit_counts_only_the_images_that_decode(tmp_path):
    "An image that does not decode was listed as unreadable and counted in its split too"
    from fracture_course.data import FractureData
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3, ext='.png')
    data = load_dataset(root)
    bad = _damaged_png(root/'test'/'fractured'/'0_0.png', root/'test'/'fractured'/'bad.png')
    data.items.append(Item(bad, 1, 'test'))  # as if it had passed the checks at load
    rep = audit(data)
    assert [u['path'] for u in rep.unreadable] == [str(bad)] and rep.counts['test'] == {'not fractured': 3, 'fractured': 3}

def test_write_manifest_leaves_out_named_files_and_keeps_the_splits(tmp_path):
    from fracture_course.data import write_manifest
    root = tree(tmp_path/'ds', [''], n=10, ext='.png')
    data = load_dataset(root)
    out = data.items[3].path
    fewer = load_dataset(write_manifest(data, tmp_path/'m.csv', leave_out=[out]))
    assert len(fewer) == 19 and {str(o.path): (o.label, o.split) for o in fewer.items} == {str(o.path): (o.label, o.split) for o in data.items if o.path != out}
    with pytest.raises(ValueError, match=r'nowhere.png: not an image of ds'): write_manifest(data, tmp_path/'m2.csv', leave_out=[tmp_path/'nowhere.png'])
    with pytest.raises(ValueError, match=r"a manifest's name ends in .csv"): write_manifest(data, tmp_path/'m.txt')


def _deny(monkeypatch, *denied):
    "Reading these files or folders raises PermissionError, as for a user without the right to (the tests run as root, who has every right)"
    import builtins, io, os
    denied = {os.path.abspath(p) for p in denied}
    def check(p):
        if isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)) in denied:
            raise PermissionError(13, 'Permission denied', os.fsdecode(p))
    real_open, real_scandir, real_listdir = builtins.open, os.scandir, os.listdir
    def open_(f, *a, **k): check(f); return real_open(f, *a, **k)
    def scandir(p='.'): check(p); return real_scandir(p)
    def listdir(p='.'): check(p); return real_listdir(p)
    for mod, name, fn in ((builtins, 'open', open_), (io, 'open', open_), (os, 'scandir', scandir), (os, 'listdir', listdir)):
        monkeypatch.setattr(mod, name, fn)

def test_a_file_that_cannot_be_read_is_left_out_of_a_dataset_the_course_splits(tmp_path, monkeypatch):
    "Fingerprinting for the split read every file: one without read permission stopped load_dataset with a raw PermissionError"
    from fracture_course.data import LeftOutWarning
    root = tree(tmp_path/'ds', [''], n=10, ext='.png')
    locked = root/'fractured'/'0_3.png'
    _deny(monkeypatch, locked)
    with pytest.warns(LeftOutWarning, match=r'0_3.png \(cannot read the file \(Permission denied\)\)'):
        data = load_dataset(root)
    assert len(data) == 19 and locked not in {o.path for o in data.items}
    assert data.skipped == [{'path': str(locked), 'reason': 'cannot read the file (Permission denied)', 'unreadable': True}]
    monkeypatch.undo(); monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    assert len(load_dataset(root)) == 20  # readable again: fingerprinted then (the failure was not cached)

def test_images_in_a_folder_that_cannot_be_read_are_said_not_lost(tmp_path, monkeypatch):
    "os.walk skipped an unreadable subfolder in silence; an unreadable split folder raised a raw PermissionError"
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3, ext='.png')
    img(root/'train'/'fractured'/'batch2'/'x.png')
    _deny(monkeypatch, root/'train'/'fractured'/'batch2')
    data = load_dataset(root)
    assert data.skipped == [{'path': str(root/'train'/'fractured'/'batch2'),
                             'reason': 'cannot read the folder (Permission denied): whatever images it holds were not read'}]
    _deny(monkeypatch, root/'val')
    with pytest.raises(ValueError, match=r"ds/val: cannot read the folder \(Permission denied\); make it readable"): load_dataset(root)
    _deny(monkeypatch, root)
    with pytest.raises(ValueError, match=r"ds: cannot read the folder \(Permission denied\); make it readable"): load_dataset(root)


def test_a_dataset_with_nothing_usable_says_why_and_a_windows_manifest_reads(tmp_path):
    "Empty class folders, or a manifest whose every row is skipped, loaded as '0 images' without a word; backslashes in a manifest were 'missing' files"
    for c in ('fractured', 'not fractured'): (tmp_path/'empty'/c).mkdir(parents=True)
    with pytest.raises(ValueError, match=r'empty: no image file in the folders its layout names'): load_dataset(tmp_path/'empty')
    root = tree(tmp_path/'win', [''], n=3, ext='.png')
    rows = [f"{c}\\{k}_{i}.png,{1 - k}" for k, c in enumerate(('fractured', 'not fractured')) for i in range(3)]
    (root/'m.csv').write_text('path,label\n' + '\n'.join(rows) + '\n')
    data = load_dataset(root/'m.csv')  # written on Windows: fractured\0_0.png
    assert len(data) == 6 and not data.skipped and sum(o.label for o in data.items) == 3
    (root/'gone.csv').write_text('path,label\n' + ''.join(f'old/x{i}.png,{i % 2}\n' for i in range(4)))
    with pytest.raises(ValueError, match=r'gone.csv: no usable image; 4 file\(s\) skipped: 4 x listed in gone.csv line N but missing \(the first: .*old/x0.png\)'):
        load_dataset(root/'gone.csv')

def test_unsplit_class_folders_with_one_class_get_a_note_and_a_lone_class_folder_a_hint(tmp_path):
    root = tree(tmp_path/'one', [''], n=5, ext='.png')
    for f in (root/'not fractured').iterdir(): f.unlink()
    notes = load_dataset(root).notes
    assert any(n.startswith('not fractured/ holds no not fractured image: every split has one class') for n in notes), notes
    (root/'not fractured').rmdir()
    with pytest.raises(ValueError, match=r'Its only class folder is fractured/: a classifier learns from both classes, so add a folder of not fractured images'):
        load_dataset(root)


def _fracatlas(root, classes=True, images='images', n=6):
    "A small FracAtlas copy: IMG0..IMG{n-1}, the first half fractured, in class folders (or not), with its dataset.csv"
    rows = ['image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured']
    for i in range(n):
        frac = i < n // 2
        img(Path(root, images, ('Fractured' if frac else 'Non_fractured') if classes else '', f'IMG{i}.jpg'), seed=i)
        rows.append(f'IMG{i}.jpg,{i % 2},{1 - i % 2},0,0,0,0,0,{int(frac)}')
    Path(root, 'dataset.csv').write_text('\n'.join(rows) + '\n')
    return Path(root)

def test_fracatlas_images_outside_its_class_folders_a_flat_copy_and_a_capitalised_images_folder(tmp_path):
    "Images beside Fractured/ and Non_fractured/ were ignored in silence; a flat images/ was 'listed but missing' row by row; Images/ was read as class folders, with advice to point at where we were"
    root = _fracatlas(tmp_path/'fa')
    img(root/'images'/'Unlabelled'/'u.jpg'); img(root/'images'/'loose.jpg')
    why = {Path(s['path']).name: s['reason'] for s in load_dataset(root).skipped}
    assert why == {'Unlabelled': "folder 'Unlabelled' in images/ is not a class folder (fractured or not fractured, in any usual spelling): its 1 image(s) were not read",
                   'loose.jpg': 'an image in images/ but not in a class folder (fractured or not fractured, in any usual spelling): not read'}
    flat = _fracatlas(tmp_path/'flat', classes=False)
    img(flat/'images'/'IMG99.jpg')  # no row: no label
    d = load_dataset(flat)
    assert d.name == 'FracAtlas' and len(d) == 6 and sorted((o.path.name, o.label) for o in d.items) == [(f'IMG{i}.jpg', int(i < 3)) for i in range(6)]
    assert [(Path(s['path']).name, s['reason']) for s in d.skipped] == [('IMG99.jpg', 'no row in dataset.csv, so no label (no class folders either): not read')]
    assert "images/ has no Fractured and Non_fractured folders: the labels are dataset.csv's fractured column" in d.notes
    assert {o.meta['region'] for o in d.items} == {'hand', 'leg'}  # its metadata read as for the usual layout
    caps = load_dataset(_fracatlas(tmp_path/'caps', images='Images'))
    assert caps.name == 'FracAtlas' and len(caps) == 6 and not any('looks like FracAtlas' in n for n in caps.notes)
    assert {o.meta['region'] for o in caps.items} == {'hand', 'leg'}


def test_small_things_a_student_meets(tmp_path):
    "JPEGs named .jfif or .jpe, a DICOM without suffix, 'nofracture' folders, a zip, settings that look like another kind, a train/ folder given alone"
    import shutil, zipfile
    from fracture_course.data import describe_source, write_dicom
    assert [label_from_name(n) for n in ('non-fracture', 'nonfracture', 'nofracture', 'Non Fracture')] == [0, 0, 0, 0]
    root = tree(tmp_path/'ds', [''], classes=('fracture', 'nofracture'), n=4)
    shutil.copy(root/'fracture'/'0_0.jpg', root/'fracture'/'a.jfif'); shutil.copy(root/'fracture'/'0_1.jpg', root/'fracture'/'b.jpe')
    dcm = write_dicom(np.arange(1600, dtype=np.uint16).reshape(40, 40), tmp_path/'x.dcm')
    (root/'nofracture'/'IM0002').write_bytes(dcm.read_bytes()[132:])  # as an archive writes it: no preamble, no suffix
    data = load_dataset(root)
    assert not data.skipped and {'a.jfif', 'b.jpe', 'IM0002'} <= {o.path.name for o in data.items} and len(data) == 11
    with zipfile.ZipFile(tmp_path/'archive.zip', 'w') as z: z.write(root/'fracture'/'0_0.jpg', 'fracture/0_0.jpg')
    with pytest.raises(ValueError, match=r'archive.zip is an archive: extract it first \(`unzip .*archive.zip" -d .*archive"`\)'): load_dataset(tmp_path/'archive.zip')
    assert 'AN ARCHIVE: extract it' in describe_source(get_config(dataset=str(tmp_path/'archive.zip')))
    for setting, hint in (('Synthetic', 'Did you mean synthetic'), ('someone/xrays', 'name it kaggle:someone/xrays'),
                          ('https://www.kaggle.com/datasets/someone/xrays', 'A Kaggle dataset is named kaggle:someone/xrays, not by its web address')):
        with pytest.raises(FileNotFoundError, match=hint): load_dataset(setting)
        assert hint in describe_source(get_config(dataset=setting))
    with pytest.raises(FileNotFoundError) as e: load_dataset(tmp_path/'nowhere')  # a plain path: no hint, and no 'None' for one
    assert str(e.value).endswith("or audit's PATH.") and describe_source(get_config(dataset=str(tmp_path/'nowhere'))).endswith('(MISSING: fix FRACTURE_DATASET.)')
    split = tree(tmp_path/'split', ['train', 'val', 'test'], n=4)
    notes = load_dataset(split/'train').notes
    assert any(n.startswith(f"train/ is the train split of the dataset in {split} (beside test/, val/): point at {split}") for n in notes), notes

def test_the_audit_leaves_dicoms_to_pydicom(tmp_path):
    "Pillow, handed a DICOM first, warned 'Corrupt EXIF data' without naming the file"
    import shutil
    from pydicom.data import get_testdata_file
    root = tree(tmp_path/'ds', [''], n=3, ext='.png')
    shutil.copy(get_testdata_file('CT_small.dcm'), root/'fractured'/'ct.dcm')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        rep = audit(root)
    assert rep.dicom['files'] == 1 and not [x for x in w if 'EXIF' in str(x.message)], [str(x.message) for x in w]

def test_a_dataset_whose_own_splits_share_a_file_is_warned_about_at_load(tmp_path):
    "The course keeps a split the dataset gives; a byte-identical copy in train and test was only found by the audit"
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3, ext='.png')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load_dataset(root)  # nothing to say
    (root/'test'/'fractured'/'again.png').write_bytes((root/'train'/'fractured'/'0_0.png').read_bytes())
    with pytest.warns(DataWarning, match=r"1 file\(s\) have byte-identical copies in another of its splits \(e.g. .*0_0.png \(train\) = .*again.png \(test\)\).*fracture-course audit"):
        load_dataset(root)


def _bound_by_permissions(code:str, tmp_path) -> dict:
    "Run python `code` (whose last line of output is JSON) where file permissions bind: as this user when not root, else under setpriv "
    "without the capabilities that override them; a skip, saying why, where neither can be had"
    import os, shutil
    cmd = [sys.executable, '-c', code]
    if os.geteuid() == 0:
        if not shutil.which('setpriv'): pytest.skip('tests run as root, which reads any folder, and setpriv (to drop that right) is missing')
        cmd = ['setpriv', '--bounding-set=-dac_override,-dac_read_search', *cmd]
    probe = tmp_path/'probe'; probe.mkdir(); probe.chmod(0)
    try: r = subprocess.run([*cmd[:-2], sys.executable, '-c', f'import os; os.listdir({str(probe)!r})'], capture_output=True)
    finally: probe.chmod(0o755)
    if r.returncode == 0: pytest.skip('cannot drop the right to read any folder here (setpriv had no effect)')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])

_OUTCOMES = '''
import json, warnings
from fracture_course.data import load_dataset, describe_source
from fracture_course.config import get_config
def outcome(f):
    try: return 'ok: ' + repr(f())
    except Exception as e: return f'{type(e).__name__}: {e}'
'''

def test_folders_that_cannot_be_read_are_named_errors_or_passed_over(tmp_path):
    "With real permissions: an unreadable class folder loaded as a one-class split; an unreadable dataset folder was named as "
    "'.../dataset.csv'; an unreadable folder beside a dataset stopped the search; describe_source raised a raw PermissionError"
    cls = tree(tmp_path/'cls', ['train', 'val', 'test'], n=2); (cls/'train'/'fractured').chmod(0)
    top = tree(tmp_path/'top', ['train', 'val', 'test'], n=2); top.chmod(0)
    beside = tmp_path/'parent'; tree(beside/'ds', ['train', 'val', 'test'], n=2); (beside/'lost+found').mkdir(); (beside/'lost+found').chmod(0)
    try:
        got = _bound_by_permissions(_OUTCOMES + f'''
print(json.dumps(dict(cls=outcome(lambda: load_dataset({str(cls)!r})), top=outcome(lambda: load_dataset({str(top)!r})),
                      beside=outcome(lambda: load_dataset({str(beside)!r}).root), said=describe_source(get_config(dataset={str(top)!r})),
                      under=describe_source(get_config(dataset={str(top/'train')!r})))))''', tmp_path)
    finally:
        for d in (cls/'train'/'fractured', top, beside/'lost+found'): d.chmod(0o755)
    assert got['cls'].startswith(f"ValueError: {cls/'train'/'fractured'}: cannot read this fractured class folder (Permission denied)"), got['cls']
    assert 'chmod' in got['cls']
    assert got['top'] == f"ValueError: {top}: cannot read the folder (Permission denied); make it readable (chmod), or copy the dataset where you can read it"
    assert got['beside'] == f"ok: PosixPath({str(beside/'ds')!r})"
    assert got['said'].startswith(f'path dataset at {top} (CANNOT BE READ: {top}: cannot read the folder (Permission denied)'), got['said']
    assert got['under'].startswith(f"path dataset at {top/'train'} (CANNOT BE READ: {top/'train'}: Permission denied; make it readable"), got['under']


def test_a_png_whose_checksum_fails_but_whose_pixels_decode_is_kept(tmp_path):
    "Image.verify() read every PNG whole at each load (8 MB 16-bit PNG: 8 ms against 0.06 ms), and left out a PNG with one bad "
    "IDAT checksum whose pixels decode exactly"
    import zlib
    from fracture_course.data import header_problem
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=2, ext='.png')
    f = root/'train'/'fractured'/'0_0.png'; before = np.asarray(load_image(f))
    b = bytearray(f.read_bytes()); i = b.index(b'IDAT'); n = int.from_bytes(b[i - 4:i], 'big')
    assert int.from_bytes(b[i + 4 + n:i + 8 + n], 'big') == zlib.crc32(b[i:i + 4 + n])  # the IDAT checksum...
    b[i + 4 + n] ^= 0xFF; f.write_bytes(b)                                            # ...spoilt, the pixels untouched
    assert header_problem(f) is None and np.array_equal(np.asarray(load_image(f)), before)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no LeftOutWarning
        assert f in {o.path for o in load_dataset(root).items}


def test_files_of_one_size_are_not_read_whole_to_find_copies_across_splits(tmp_path, monkeypatch):
    "Fixed-size formats (BMP, raw TIFF or DICOM) share one size: every file was hashed whole at every load; now only those whose "
    "sampled bytes match too"
    import shutil
    import fracture_course.data as data_mod
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3, ext='.bmp')
    assert len({p.stat().st_size for p in root.rglob('*.bmp')}) == 1
    read = []
    monkeypatch.setattr(data_mod, 'file_digest', lambda p: read.append(Path(p).name) or data_mod.hashlib.sha1(Path(p).read_bytes()).hexdigest())
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no copy across splits: no DataWarning
        load_dataset(root)
    assert read == []
    shutil.copy(root/'train'/'fractured'/'0_0.bmp', root/'test'/'fractured'/'copy.bmp')
    with pytest.warns(DataWarning, match=r'1 file\(s\) have byte-identical copies in another of its splits'): load_dataset(root)
    assert sorted(read) == ['0_0.bmp', 'copy.bmp']


@pytest.mark.filterwarnings('ignore:.* too few for a')  # small sets, as the test needs
def test_a_metadata_table_named_like_fracatlas_does_not_make_a_dataset_fracatlas(tmp_path):
    "Dataset.csv (any table) and Images/ beside split folders were taken for FracAtlas and refused for lacking its columns"
    root = tree(tmp_path/'ds', ['train', 'test'], n=3)
    (root/'Dataset.csv').write_text('name,source\nx,y\n'); (root/'Images').mkdir(); img(root/'Images'/'example.jpg')
    data = load_dataset(root)
    assert len(data) == 12 and data.counts()['test'] == {'not fractured': 3, 'fractured': 3}
    (root/'Dataset.csv').write_text('image_id,fractured\nexample.jpg,1\n')  # FracAtlas's columns: FracAtlas, read by its table
    assert load_dataset(root).name == 'FracAtlas'

def test_colour_images_are_refused_only_where_an_image_is_scored(tmp_path):
    from fracture_course.data import MAX_COLOUR, colour_spread
    from fracture_course.transforms import decode_resize, grey_preset
    g = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (80, 1))
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path/'grey_rgb.jpg', quality=90)  # grey saved as RGB, with JPEG's chroma noise
    Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(tmp_path/'tinted.png')
    Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(tmp_path/'tinted.jpg', quality=90)  # JPEGs are decoded at reduced size: in colour when it is checked
    rgba = np.stack([g, g // 3, g // 3, np.full_like(g, 255)], -1); Image.fromarray(rgba, 'RGBA').save(tmp_path/'red.png')
    pal = Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).convert('P'); pal.save(tmp_path/'palette.png')
    assert colour_spread(Image.open(tmp_path/'grey_rgb.jpg')) <= 2 < MAX_COLOUR
    assert load_image(tmp_path/'grey_rgb.jpg', max_colour=MAX_COLOUR).mode == 'L'
    assert np.array_equal(np.asarray(load_image(tmp_path/'grey_rgb.jpg', max_colour=MAX_COLOUR)), np.asarray(load_image(tmp_path/'grey_rgb.jpg')))  # the pixels training reads
    hidden = np.stack([g, g, g, np.full_like(g, 255)], -1); hidden[:, :48, :3] = (255, 0, 0); hidden[:, :48, 3] = 0  # red, fully transparent
    Image.fromarray(hidden, 'RGBA').save(tmp_path/'hidden.png')
    assert load_image(tmp_path/'hidden.png', max_colour=MAX_COLOUR).mode == 'L'  # read over black, as load_image reads it: no colour shows
    for f in ['tinted.png', 'tinted.jpg', 'red.png', 'palette.png']:
        assert colour_spread(Image.open(tmp_path/f)) > MAX_COLOUR, f
        assert load_image(tmp_path/f).mode == 'L'  # training and evaluation read it as grey
        with pytest.raises(UnreadableImage, match=f"{f}: a colour image .* use the original X-ray"): load_image(tmp_path/f, max_colour=MAX_COLOUR)
    with pytest.raises(UnreadableImage, match='tinted.png: a colour image'): decode_resize(tmp_path/'tinted.png', grey_preset(32), max_colour=MAX_COLOUR)
    assert decode_resize(tmp_path/'tinted.png', grey_preset(32)).shape == (1, 32, 32)

def test_a_file_pillow_cannot_read_gets_advice(tmp_path):
    (tmp_path/'page.png').write_text('<html>not an image</html>')
    with pytest.raises(UnreadableImage, match=r"page.png: not an image Pillow can read .*save or export it again as PNG, JPEG or DICOM"): load_image(tmp_path/'page.png')


def test_audit_says_what_to_do_and_how_many_more_it_did_not_list(tmp_path):
    "Each finding is followed by what to do; every list cut at `show` says how many more; the reasons carry load_image's advice"
    from fracture_course.data import header_problem, write_manifest, LeftOutWarning
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=6, ext='.png')
    for i in range(7): (root/'train'/'fractured'/f'empty{i}.png').write_bytes(b'')
    (root/'train'/'not fractured'/'fake.png').write_text('<html>not an image</html>')
    red = np.zeros((40, 48, 3), np.uint8); red[..., 0] = 200
    for i in range(2): Image.fromarray(red + i).save(root/'test'/'fractured'/f'red{i}.png')
    with pytest.warns(LeftOutWarning, match=r"; \.\.\. and 3 more \(every one is in the dataset's `skipped`\)"): data = load_dataset(root)
    assert header_problem(root/'train'/'not fractured'/'fake.png').startswith('not an image Pillow can read: save or export it again as PNG')
    with pytest.raises(UnreadableImage, match='re-download or delete it'): load_image(root/'train'/'fractured'/'empty0.png')
    rep = audit(data)
    text = rep.summary(show=5)
    assert '... and 3 more (every one is in --json FILE)' in text and 'empty file (0 bytes); re-download or delete it' in text
    assert [Path(c['path']).name for c in rep.colour] == ['red0.png', 'red1.png'] and 'colour pictures: 2' in text
    assert set(rep.advice()) == {'unreadable', 'colour'} and text.count('what to do:') == 2
    assert 'were left out when the dataset was read' in rep.advice()['unreadable'] and 'predict, serve and evaluate refuse' in rep.advice()['colour']
    short = rep.summary(show=1)
    assert '    ... and 1 more (every one is in --json FILE)' in short  # the two colour pictures, cut at one
    kept = load_dataset(write_manifest(data, tmp_path/'kept.csv', leave_out=audit(data).files_of('colour')))  # the advice's own command
    assert len(kept) == len(data) - 2

def test_audit_names_one_class_and_truncated_files_of_one_class(tmp_path):
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=6)
    for f in (root/'test'/'fractured').iterdir(): f.unlink()
    for i in range(3):
        b = (root/'train'/'not fractured'/f'1_{i}.jpg').read_bytes(); (root/'train'/'not fractured'/f'1_{i}.jpg').write_bytes(b[:len(b) * 2 // 3])
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); rep = audit(root)
    assert rep.one_class() == ['the test split: 6 not fractured, no fractured'] and len(rep.damaged) == 3
    a = rep.advice()
    assert 'all 3 are not fractured' in a['decoded only partly'] and '--manifest kept.csv --leave-out damaged' in a['decoded only partly']
    assert 'add images of the missing class' in a['one class']
    assert all(Path(p).name in rep.summary() for p in rep.damaged)  # the partly decoded files are named, not only counted


def _planted(root):
    "A split dataset with one file of each kind `--leave-out` names: a truncated JPEG, a colour picture, a thumbnail, a relabelled copy"
    root = tree(root, ['train', 'val', 'test'], n=6)
    b = (root/'train'/'not fractured'/'1_0.jpg').read_bytes(); (root/'train'/'not fractured'/'1_0.jpg').write_bytes(b[:len(b) * 2 // 3])
    red = np.zeros((40, 48, 3), np.uint8); red[..., 0] = 200; Image.fromarray(red).save(root/'test'/'fractured'/'red.png')
    img(root/'val'/'fractured'/'thumb.png', size=(20, 300))
    (root/'train'/'not fractured'/'relabelled.jpg').write_bytes((root/'train'/'fractured'/'0_0.jpg').read_bytes())
    return root


def test_audit_names_the_files_of_each_finding_for_a_manifest(tmp_path):
    "files_of gives the paths of the findings asked (either spelling), each once; a finding without files is refused by name"
    root = _planted(tmp_path/'ds')
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); rep = audit(root)
    name = lambda *k: [Path(p).name for p in rep.files_of(*k)]
    assert name('damaged') == ['1_0.jpg'] and name('colour') == ['red.png'] and name('too_small') == name('too-small') == ['thumb.png']
    assert sorted(name('different-labels')) == ['0_0.jpg', 'relabelled.jpg']
    assert len(rep.files_of('damaged', 'damaged', 'colour')) == 2
    with pytest.raises(ValueError, match="duplicates: not a finding with files; choose from unreadable, damaged, too-small"): rep.files_of('duplicates')
    assert 'fracture-course audit' in rep.advice()['colour'] and "--manifest kept.csv --leave-out colour" in rep.advice()['colour']
    assert "files_of('colour')" in rep.advice()['colour']


def test_audit_writes_a_manifest_without_the_files_it_leaves_out(tmp_path, capsys):
    "--manifest: the same labels and splits less the files of --leave-out; it says what it left out and warns of a split left without a class"
    from fracture_course.cli import main
    root = _planted(tmp_path/'ds')
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); data = load_dataset(root)
    kept = tmp_path/'kept.csv'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert main(['audit', str(root), '--manifest', str(kept)]) == 0
        out = capsys.readouterr().out
        assert f"Manifest written to {kept}: {len(data) - 3:,} of {len(data):,} images, each in its split with its label" in out
        assert '(columns path, label, split; left out: unreadable 0, damaged 1, too-small 1, colour 1)' in out and f'fracture-course train --data {kept}' in out
        fewer = load_dataset(kept)
        gone = {root/'train'/'not fractured'/'1_0.jpg', root/'test'/'fractured'/'red.png', root/'val'/'fractured'/'thumb.png'}
        assert len(fewer) == len(data) - 3 and not gone & {o.path for o in fewer.items}
        assert {(o.path, o.split, o.label) for o in fewer.items} == {(o.path, o.split, o.label) for o in data.items if o.path not in gone}
        assert main(['audit', str(root), '--manifest', str(kept), '--leave-out', 'damaged']) == 1  # it replaces no file, not even its own
        assert 'the file exists, and the audit replaces no file' in capsys.readouterr().err and len(load_dataset(kept)) == len(data) - 3
        assert main(['audit', str(root), '--manifest', str(tmp_path/'k2.csv'), '--leave-out', 'different_labels']) == 0
        assert len(load_dataset(tmp_path/'k2.csv')) == len(data) - 2 and 'left out: different-labels 2)' in capsys.readouterr().out
        assert main(['audit', str(root), '--json', '-', '--manifest', str(tmp_path/'k3.csv'), '--leave-out', 'damaged']) == 0  # JSON alone on stdout
        o = capsys.readouterr(); assert json.loads(o.out)['damaged'] and 'Manifest written to' in o.err
    for f in (root/'val'/'fractured').iterdir():
        if f.name != 'thumb.png': f.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert main(['audit', str(root), '--manifest', str(tmp_path/'k4.csv'), '--leave-out', 'too-small']) == 0
    assert "warning: the valid split has no fractured left; `train` refuses it" in capsys.readouterr().out
    for f in (root/'val'/'not fractured').iterdir(): f.unlink()  # the validation split: the thumbnail alone
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert main(['audit', str(root), '--manifest', str(tmp_path/'k5.csv'), '--leave-out', 'too-small']) == 0
    assert "warning: the valid split has no image left; reading the manifest would make one up" in capsys.readouterr().out


def test_audit_manifest_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    "A bad --leave-out (or one without --manifest), a manifest inside the dataset's folder, over the dataset's own CSV or over any file: refused by name, before the audit, nothing written"
    from fracture_course.cli import main
    from fracture_course.data import write_manifest
    root = tree(tmp_path/'ds', ['train', 'val', 'test'], n=3)
    (tmp_path/'notes.csv').write_text('mine\n')
    own = write_manifest(load_dataset(root), tmp_path/'own.csv'); own_text = own.read_text()  # a user's manifest, in the audit's own format
    for args, why in ((['--manifest', str(tmp_path/'k.csv'), '--leave-out', 'damaged,dupes'], 'dupes is not one of unreadable, damaged'),
                      (['--manifest', str(root/'kept.csv')], "inside the dataset's folder .*write the manifest outside"),
                      (['--manifest', str(tmp_path/'notes.csv')], 'the file exists, and the audit replaces no file'),
                      (['--manifest', str(own)], 'the file exists'),
                      (['--leave-out', 'damaged'], 'it says what --manifest leaves out; add --manifest FILE.csv'),
                      (['--manifest', str(tmp_path/'k.txt')], "the manifest's name must end in .csv"),
                      (['--manifest', str(tmp_path/'no'/'k.csv')], 'its folder does not exist')):
        assert main(['audit', str(root), *args]) == 1
        o = capsys.readouterr(); assert 'Audit of' not in o.out and __import__('re').search(why, o.err), o.err
    assert main(['audit', str(own), '--manifest', str(own)]) == 1 and 'this is the dataset being audited' in capsys.readouterr().err
    assert (tmp_path/'notes.csv').read_text() == 'mine\n' and own.read_text() == own_text and not (root/'kept.csv').exists() and not (tmp_path/'k.csv').exists()
