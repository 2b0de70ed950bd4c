"Preprocessing presets, the decoded-image cache, augmentations with boxes, samplers and loaders."
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from fracture_course.data import load_dataset
from fracture_course.transforms import (IMAGENET_MEAN, IMAGENET_STD, CachedDataset, ImageCache, Preset, augment_with_boxes,
    augmentations, balanced_sampler, class_weights, decode_resize, eval_tfms, get_dls, grey_preset, imagenet_preset,
    resize_boxes, stats_preset, train_tfms)

@pytest.fixture
def ds(tmp_path):
    "A split-folder dataset of 4+2+2 images per class; fractured images are brighter"
    for s, n in [('train', 6), ('val', 3), ('test', 3)]:
        for c, lvl in [('fractured', 180), ('not fractured', 60)]:
            d = tmp_path/'ds'/s/c; d.mkdir(parents=True)
            for i in range(n): Image.fromarray(np.full((50, 70), lvl, np.uint8)).save(d/f'{i}.png')
    return load_dataset(tmp_path/'ds')

@pytest.mark.parametrize('preset', [imagenet_preset(224), imagenet_preset(64), grey_preset(128), grey_preset(64)])
@pytest.mark.parametrize('level', ['none', 'flip', 'light', 'medium', 'heavy'])
def test_presets_give_shape_dtype_channels_and_range(preset, level):
    x = torch.randint(0, 256, (1, preset.resize, preset.resize), dtype=torch.uint8)
    x[0, 0, 0], x[0, -1, -1] = 0, 255
    lo = min((0 - m) / s for m, s in zip(preset.mean, preset.std)); hi = max((1 - m) / s for m, s in zip(preset.mean, preset.std))
    for t in (eval_tfms(preset), train_tfms(preset, level)):
        y = t(x)
        assert y.shape == (preset.channels, preset.size, preset.size) and y.dtype == torch.float32
        assert y.min() >= lo - 1e-5 and y.max() <= hi + 1e-5

def test_imagenet_preset_matches_the_textbook_pipeline(tmp_path):
    yy, xx = np.mgrid[0:300, 0:410]
    Image.fromarray(((np.sin(xx/17) + np.cos(yy/11)) * 60 + 128).astype(np.uint8)).save(tmp_path/'w.png')
    p = imagenet_preset(224)
    ref = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.Grayscale(3), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                      v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])(Image.open(tmp_path/'w.png'))
    ours = eval_tfms(p)(decode_resize(tmp_path/'w.png', p))
    assert ours.shape == ref.shape == (3, 224, 224) and (ours - ref).abs().max() < 1e-5

def test_preset_round_trips_through_a_dict():
    for p in (imagenet_preset(96), grey_preset(64)): assert Preset.from_dict(p.to_dict()) == p

def test_dataset_statistics_of_a_known_set(ds, tmp_path):
    sp = stats_preset(ds, 32, cache_dir=tmp_path/'c')
    v = np.array([180/255] * 6 + [60/255] * 6)
    assert sp.mean[0] == pytest.approx(v.mean(), abs=1e-6) and sp.std[0] == pytest.approx(v.std(), abs=1e-6)
    assert list((tmp_path/'c').glob('stats-*.json')), 'statistics are cached per dataset'
    assert stats_preset(ds, 32, channels=3).mean == (sp.mean[0],) * 3

def test_cache_on_disk_is_reused_and_equal(ds, tmp_path):
    p = grey_preset(32)
    a = ImageCache(ds.split('train'), p, tmp_path/'c')
    b = ImageCache(ds.split('train'), p, tmp_path/'c')
    assert a.source.startswith('decoded') and b.source.startswith('loaded')
    assert np.array_equal(np.asarray(a.arr), np.asarray(b.arr)) and a.nbytes == 12 * 32 * 32
    x = b[0]; x += 1
    assert not np.array_equal(x.numpy(), np.asarray(b.arr[0])), 'items are copies; the cache stays unchanged'

def test_augmentations_keep_labels(ds):
    cache = ImageCache(ds.split('train'), grey_preset(32))
    for level in ('heavy', 'medium'):
        d = CachedDataset(cache, train_tfms(grey_preset(32), level))
        assert [int(d[i][1]) for i in range(len(d))] == [o.label for o in ds.split('train')]

def test_geometric_augmentations_move_boxes_with_the_fracture():
    img = torch.zeros(1, 96, 96, dtype=torch.uint8); img[:, 20:30, 60:70] = 255
    torch.manual_seed(0)
    for t in [v2.RandomHorizontalFlip(1.0), v2.RandomRotation(15), v2.RandomAffine(10, (0.1, 0.1), (0.9, 1.1), 5),
              v2.RandomResizedCrop(80, (0.7, 1.0))]:
        for _ in range(5):
            out, b = augment_with_boxes(img, [[60, 20, 70, 30]], t)
            ys, xs = torch.nonzero(out[0] > 128, as_tuple=True)
            if len(xs) == 0: continue   # the bright patch was cropped away: the box is clamped, nothing to check
            cx, cy = xs.float().mean(), ys.float().mean()
            x0, y0, x1, y1 = b[0].tolist()
            assert x0 - 1 <= cx <= x1 + 1 and y0 - 1 <= cy <= y1 + 1, (t, b)

def test_resize_boxes_follows_decode_resize(tmp_path):
    a = np.zeros((200, 300), np.uint8); a[50:70, 200:240] = 255
    Image.fromarray(a).save(tmp_path/'b.png')
    for p in (grey_preset(64), imagenet_preset(96)):
        x = decode_resize(tmp_path/'b.png', p)[0].float()
        ys, xs = torch.nonzero(x > 128, as_tuple=True)
        b = resize_boxes([[200, 50, 240, 70]], (300, 200), p)[0]
        assert abs(xs.float().mean() - (b[0] + b[2]) / 2) < 1.5 and abs(ys.float().mean() - (b[1] + b[3]) / 2) < 1.5

def test_class_weights_and_balanced_sampler():
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = class_weights(labels)
    assert torch.allclose(w, torch.tensor([100 / 180, 100 / 20])) and torch.isclose(w[labels].mean(), torch.tensor(1.0))
    drawn = labels[list(balanced_sampler(labels, seed=0))]
    assert 0.35 < drawn.float().mean() < 0.65

def test_get_dls_shapes_balance_and_errors(ds):
    dls = get_dls(ds, imagenet_preset(32), 'medium', bs=4, balance='sampler')
    xb, yb = next(iter(dls.train))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.long
    assert len(dls.valid.dataset) == 6 and len(dls.test.dataset) == 6
    with pytest.raises(ValueError, match='balance'): get_dls(ds, grey_preset(32), balance='oversample')
    with pytest.raises(ValueError, match='Unknown augmentation level'): augmentations('extreme', 32)
    ds.items = [o for o in ds.items if o.split != 'valid']
    with pytest.raises(ValueError, match='no valid split'): get_dls(ds, grey_preset(32))

def test_same_seed_same_batches(ds):
    a = [yb.tolist() for _, yb in get_dls(ds, grey_preset(32), seed=3, bs=4).train]
    b = [yb.tolist() for _, yb in get_dls(ds, grey_preset(32), seed=3, bs=4).train]
    assert a == b

def test_crop_origin_keeps_the_box_centre_inside_or_says_the_crop_is_too_big():
    from fracture_course.transforms import crop_origin
    torch.manual_seed(0)
    seen = set()
    for _ in range(300):  # the centre (55, 25) lies at least 8 px inside the 40-px window, which stays in the image
        l, t = crop_origin(100, 40, torch.tensor([[50., 20., 60., 30.]])); seen.add((l, t))
        assert 23 <= l <= 47 and 0 <= t <= 17
    assert len(seen) > 100
    assert crop_origin(100, 40, torch.tensor([[0., 96., 4., 100.]])) == (0, 60)  # a centre by the corner: the corner crop
    assert len({crop_origin(100, 40, torch.zeros(0, 4)) for _ in range(100)}) > 50
    with pytest.raises(ValueError, match='does not fit'): crop_origin(32, 40, torch.zeros(0, 4))

def test_train_crop_aims_crops_at_the_fracture_and_keeps_validation_whole(tmp_path):
    import csv, json
    from fracture_course.transforms import CropDataset
    rng = np.random.default_rng(0)
    with open(tmp_path/'manifest.csv', 'w', newline='') as f:  # fractured: a bright square near the left edge
        w = csv.writer(f); w.writerow(['path', 'label', 'split', 'boxes'])
        for s, n in [('train', 6), ('val', 4), ('test', 4)]:
            for c in ('fractured', 'not fractured'):
                for i in range(n):
                    a = rng.integers(0, 80, (40, 40), dtype=np.uint8)
                    if c == 'fractured': a[16:22, 2:8] = 250
                    p = tmp_path/f'{s}_{c[:3]}{i}.png'; Image.fromarray(a).save(p)
                    w.writerow([p, c, s, json.dumps([[2, 16, 8, 22]]) if c == 'fractured' else ''])
    data = load_dataset(tmp_path/'manifest.csv')
    dls = get_dls(data, grey_preset(40), 'flip', bs=4, train_crop=24)
    xb, yb = next(iter(dls.train))
    assert xb.shape == (4, 1, 24, 24) and next(iter(dls.valid))[0].shape == (4, 1, 40, 40) and dls.preset.size == 40
    tr = dls.train.dataset
    assert isinstance(tr, CropDataset) and sum(len(b) > 0 for b in tr.boxes) == 6
    bright = lambda x: (x > 1.5).any()  # normalised, the square (250) is 1.92 and the background (0-80) below -0.7
    # flips move the square to the right edge half the time: a crop that ignored the flipped box would miss it
    for i, b in enumerate(tr.boxes):
        if len(b): assert all(bright(tr[i][0]) for _ in range(40))
    with pytest.raises(ValueError, match='cannot be combined'): get_dls(data, grey_preset(40), bs=4, train_crop=16, box_maps=True)
    with pytest.raises(ValueError, match='train_crop 48 must be'): get_dls(data, grey_preset(40), bs=4, train_crop=48)

def _varied(tmp_path, n=20):
    "A split-folder dataset whose images all differ (so that a flip or a mix-up would show)"
    rng = np.random.default_rng(0)
    for s, k in [('train', n), ('val', 10), ('test', 4)]:
        for c in ('fractured', 'not fractured'):
            d = tmp_path/'v'/s/c; d.mkdir(parents=True)
            for i in range(k): Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(d/f'{i}.png')
    return load_dataset(tmp_path/'v')

@pytest.mark.parametrize('preset', [grey_preset(32), imagenet_preset(32), imagenet_preset(32, squash=True)])
@pytest.mark.parametrize('level', ['none', 'flip', 'light'])
def test_whole_batches_equal_image_by_image(tmp_path, preset, level):
    "Batches made in one go (`batch_transform`) are the image-by-image ones exactly, and leave the generator where they found it"
    from fracture_course.transforms import batch_transform
    dls = get_dls(_varied(tmp_path), preset, level, bs=8, seed=3)
    batchable = batch_transform(dls.train.dataset.tfm) is not None
    assert batchable == (level != 'light' and preset.resize == preset.size)  # rotations and random crops go image by image
    assert batch_transform(dls.valid.dataset.tfm) is not None
    def epoch(dl, batched):
        dl.dataset.batched = batched
        torch.manual_seed(0); dl.generator.manual_seed(0) if dl.generator is not None else None
        return [b for b in dl], torch.rand(1)
    for dl in (dls.train, dls.valid):
        (a, ra), (b, rb) = epoch(dl, False), epoch(dl, True)
        assert len(a) == len(b) > 1 and torch.equal(ra, rb)
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    if level == 'flip' and batchable:  # the flips are really there: some images of an epoch are mirrored, others not
        torch.manual_seed(0); xb, _ = next(iter(DataLoader(dls.train.dataset, batch_size=40)))
        plain = torch.stack([eval_tfms(preset)(dls.train.dataset.cache[i]) for i in range(40)])
        same = [torch.equal(x, p) for x, p in zip(xb, plain)]
        assert 0 < sum(same) < 40

def test_whole_batches_take_subset_indices(tmp_path):
    "A `Subset` passes NumPy or tensor indices; the batch path takes them like the image-by-image path"
    from torch.utils.data import Subset
    dls = get_dls(_varied(tmp_path), grey_preset(32), 'none', bs=8, seed=3)
    for idx in (np.array([5, 1, 7]), torch.tensor([5, 1, 7]), [5, 1, 7]):
        xb, yb = next(iter(DataLoader(Subset(dls.train.dataset, idx), batch_size=3)))
        assert torch.equal(xb, torch.stack([dls.train.dataset[i][0] for i in (5, 1, 7)])) and yb.tolist() == [dls.train.dataset[i][1].item() for i in (5, 1, 7)]


def test_whole_batches_are_really_made_in_one_go(tmp_path, monkeypatch):
    "A batchable loader never calls the image-by-image `__getitem__`; a rotating one calls it for every image"
    dls = get_dls(_varied(tmp_path), grey_preset(32), 'flip', bs=8, seed=3)
    calls = []
    orig = CachedDataset.__getitem__
    monkeypatch.setattr(CachedDataset, '__getitem__', lambda self, i: calls.append(i) or orig(self, i))
    n = sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid)
    assert n > 0 and calls == []
    dls.train.dataset.batched = False
    assert sum(len(y) for _, y in dls.train) == len(calls) > 0

def test_batch_transform_draws_in_the_order_of_the_image_by_image_loop():
    "Two flips with other probabilities than 0.5, and a crop: the same images and the generator left where it was"
    from fracture_course.transforms import ToModelInput, batch_transform
    tfm = v2.Compose([v2.RandomHorizontalFlip(0.3), v2.RandomVerticalFlip(0.8), v2.CenterCrop(20), ToModelInput(imagenet_preset(20, squash=True))])
    imgs = torch.randint(0, 256, (50, 1, 24, 24), dtype=torch.uint8)
    torch.manual_seed(1); ref = torch.stack([tfm(x) for x in imgs]); after = torch.rand(1)
    torch.manual_seed(1); out = batch_transform(tfm)(imgs)
    assert out.shape == (50, 3, 20, 20) and torch.equal(out, ref) and torch.equal(torch.rand(1), after)
    swapped = v2.Compose([v2.RandomVerticalFlip(0.8), v2.RandomHorizontalFlip(0.3), *tfm.transforms[2:]])
    torch.manual_seed(1); assert not torch.equal(batch_transform(swapped)(imgs), ref)  # the order of the steps matters

def test_batch_transform_refuses_what_it_cannot_reproduce():
    from fracture_course.transforms import ToModelInput, batch_transform
    class MyCrop(v2.CenterCrop): pass  # a subclass may draw at random: image by image
    class MyFlip(v2.RandomHorizontalFlip): pass
    for t in (MyCrop(8), MyFlip(), v2.RandomRotation(5), v2.RandomCrop(8), v2.ColorJitter(0.2)):
        assert batch_transform(v2.Compose([t, ToModelInput(grey_preset(8))])) is None, t
    x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(batch_transform(None)(x), x)

def test_whole_batches_from_a_memory_mapped_cache(tmp_path):
    "The second loader maps the cache from disk; its batches equal the first one's, made in memory"
    data = _varied(tmp_path)
    a = get_dls(data, grey_preset(32), 'flip', bs=8, seed=3, cache_dir=tmp_path/'c')
    b = get_dls(data, grey_preset(32), 'flip', bs=8, seed=3, cache_dir=tmp_path/'c')
    assert isinstance(b.train.dataset.cache.arr, np.memmap)
    torch.manual_seed(0); xa = [x for x, _ in a.train]
    torch.manual_seed(0); xb = [x for x, _ in b.train]
    assert len(xa) == len(xb) > 1 and all(torch.equal(p, q) for p, q in zip(xa, xb))

def test_a_truncated_image_is_decoded_partly_and_named_in_a_warning(tmp_path):
    "Chapter 2's promise on the training path too: a cut file loads with what decodes, and the loaders say which"
    from PIL import Image
    from fracture_course.data import DamagedImageWarning, Item
    from fracture_course.transforms import ImageCache, grey_preset
    Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8)).save(tmp_path/'whole.jpg', quality=95)
    (tmp_path/'cut.jpg').write_bytes((tmp_path/'whole.jpg').read_bytes()[:4000])
    with pytest.warns(DamagedImageWarning, match=r'1 truncated image\(s\) decoded only partly.*cut.jpg'):
        cache = ImageCache([Item(tmp_path/'whole.jpg', 0), Item(tmp_path/'cut.jpg', 1)], grey_preset(32))
    assert cache.arr.shape == (2, 1, 32, 32) and cache.truncated == [str(tmp_path/'cut.jpg')]
    import warnings
    from fracture_course import transforms
    items = [Item(tmp_path/'whole.jpg', 0), Item(tmp_path/'cut.jpg', 1)]
    with warnings.catch_warnings():
        warnings.simplefilter('error', DamagedImageWarning)
        ImageCache(items, grey_preset(48))  # in memory again (another size, as a chapter's next loaders): the same files, not named again
    transforms._WARNED.clear()  # as in a new process
    with pytest.warns(DamagedImageWarning, match=r'1 truncated image\(s\).*cut.jpg'):
        first = ImageCache(items, grey_preset(32), cache_dir=tmp_path/'cache')  # kept on disk, with its list
    with warnings.catch_warnings():
        warnings.simplefilter('error', DamagedImageWarning)
        again = ImageCache(items, grey_preset(32), cache_dir=tmp_path/'cache')  # the same process: said once is enough
    transforms._WARNED.clear()  # as in the next process (a later command), which loads the kept cache
    with pytest.warns(DamagedImageWarning, match=r'1 truncated image\(s\).*cut.jpg'):
        kept = ImageCache(items, grey_preset(32), cache_dir=tmp_path/'cache')
    assert first.truncated == again.truncated == kept.truncated == [str(tmp_path/'cut.jpg')] and 'loaded' in kept.source
    for side in (tmp_path/'cache').glob('*.truncated.json'): side.unlink()  # a cache from before the list was kept
    transforms._WARNED.clear()
    with pytest.warns(DamagedImageWarning, match='cut.jpg'):
        again = ImageCache([Item(tmp_path/'whole.jpg', 0), Item(tmp_path/'cut.jpg', 1)], grey_preset(32), cache_dir=tmp_path/'cache')
    assert again.source.startswith('decoded') and again.truncated == [str(tmp_path/'cut.jpg')]  # decoded again, to know which

def test_get_dls_names_the_truncated_images_of_all_splits_in_one_warning(tmp_path):
    "One warning per get_dls call (not one per split), with counts by split and class, the first files and where the full list is"
    import re, warnings
    from PIL import Image
    from fracture_course import transforms
    from fracture_course.data import DamagedImageWarning, FractureData, Item
    from fracture_course.transforms import get_dls, grey_preset, stats_preset
    Image.fromarray((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8)).save(tmp_path/'whole.jpg', quality=95)
    whole = (tmp_path/'whole.jpg').read_bytes()
    def make(name, cut, label, split):
        (tmp_path/name).write_bytes(whole[:4000] if cut else whole); return Item(tmp_path/name, label, split)
    cuts = {'train': 3, 'valid': 1, 'test': 1}
    items = [make(f'{s}{k}.jpg', k < n, 0 if k < n else k % 2, s) for s, n in cuts.items() for k in range(n + 2)]
    data = FractureData('cut', tmp_path, items)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        stats_preset(data, 32)  # its cache of the training split says nothing: the loaders made with it do
        dls = get_dls(data, grey_preset(32), 'none', bs=2)
    said = [str(w.message) for w in caught if issubclass(w.category, DamagedImageWarning)]
    assert len(said) == 1, said
    assert re.search(r'^5 truncated image\(s\) decoded only partly.*\(train 3, valid 1, test 1; not fractured 5, fractured 0: all of one class', said[0])
    assert 'train0.jpg' in said[0] and "(all 5: the loaders' `truncated`; `fracture-course audit DATASET` lists them, and its `--manifest` leaves them out)" in said[0]
    assert {s: len(v) for s, v in dls.truncated.items()} == cuts and str(tmp_path/'test0.jpg') in dls.truncated['test']
    with warnings.catch_warnings():
        warnings.simplefilter('error', DamagedImageWarning)
        get_dls(data, grey_preset(48), 'none', bs=2)  # the same files again (another size): named once is enough
    transforms._WARNED.clear()
    data.items.append(make('valid9.jpg', True, 1, 'valid'))  # a fractured one too: no longer one class
    with pytest.warns(DamagedImageWarning, match=r'^6 truncated .*\(train 3, valid 2, test 1; not fractured 5, fractured 1\): ') as w:
        get_dls(data, grey_preset(32), 'none', bs=2)
    assert len([x for x in w if issubclass(x.category, DamagedImageWarning)]) == 1 and 'all of one class' not in str(w[0].message)

def test_a_preset_that_cannot_make_inputs_is_refused_with_the_reason():
    import numpy as np
    from fracture_course.transforms import Preset, grey_preset
    for make, why in ((lambda: grey_preset(0), 'size must be a whole number of pixels'), (lambda: grey_preset(64, std=float('nan')), 'std positive'),
                      (lambda: Preset('x', 64, 3, 64, (0.5,), (0.2,)), r'one value per channel \(3\)'),
                      (lambda: Preset('x', 64, 1, 32, (0.5,), (0.2,)), 'resize must be at least size'), (lambda: Preset('x', 64, 2, 64, (0.5,) * 2, (0.2,) * 2), '1 \\(greyscale\\) or 3')):
        with pytest.raises(ValueError, match=why): make()
    assert Preset('stats', 64, 1, 64, (np.float32(0.4),), (np.float32(0.2),)).std[0] > 0  # numpy's numbers, as stats_preset computes them

def test_channel_stats_refuses_float_images_it_would_scale_twice():
    from fracture_course.transforms import channel_stats
    assert channel_stats([torch.full((1, 4, 4), 255, dtype=torch.uint8)]) == (1.0, 0.0)
    with pytest.raises(TypeError, match='takes uint8 images .* got torch.float32'): channel_stats([torch.rand(1, 4, 4)])

def test_images_that_do_not_decode_stop_the_cache_with_every_file_named_and_what_to_do(tmp_path):
    "A file that passed load_dataset's checks but does not decode: a raw UnreadableImage for the first one only, and no advice"
    from fracture_course.data import Item
    for i in range(3): Image.fromarray(np.full((40, 40), 50 * i, np.uint8)).save(tmp_path/f'{i}.png')
    for i in (1, 2):
        b = bytearray((tmp_path/f'{i}.png').read_bytes()); b[-20] ^= 0xFF; (tmp_path/f'bad{i}.png').write_bytes(b)
    items = [Item(tmp_path/'0.png', 0), Item(tmp_path/'bad1.png', 1), Item(tmp_path/'bad2.png', 0)]
    with pytest.raises(ValueError, match=r"2 image\(s\) do not decode: .*bad1.png \(damaged image.*; .*bad2.png .*--manifest /kaggle/working/kept.csv") as e:
        ImageCache(items, grey_preset(32))
    assert 'FRACTURE_DATASET' in str(e.value)
