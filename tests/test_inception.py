"Inception network (models.py, exported by nbs/07_inception.ipynb) and flip test-time augmentation (tta.py)."
import subprocess, sys

import pytest
import torch
from torch import nn
from torchinfo import summary

from fracture_course.models import InceptionBlock, InceptionNet, create_model, inception_conv, model_names
from fracture_course.tta import flip_tta_probs, hflip, tta_probs

from conftest import ROOT

# The write-up's Fig. 2 (torchinfo, one 3x224x224 image): layer, depth-index, output shape. Its network sat in a
# Lightning wrapper, hence the extra top level.
PAPER = """RadiographiesNet 1-1 [1, 2]
Sequential 2-1 [1, 32, 56, 56]
Conv2d 3-1 [1, 32, 112, 112]
BatchNorm2d 3-2 [1, 32, 112, 112]
ReLU 3-3 [1, 32, 112, 112]
MaxPool2d 3-4 [1, 32, 56, 56]
Dropout 3-5 [1, 32, 56, 56]
InceptionBlock 2-2 [1, 128, 56, 56]
Sequential 3-6 [1, 32, 56, 56]
Sequential 3-7 [1, 32, 56, 56]
Sequential 3-8 [1, 32, 56, 56]
Sequential 3-9 [1, 32, 56, 56]
InceptionBlock 2-3 [1, 256, 56, 56]
Sequential 3-10 [1, 64, 56, 56]
Sequential 3-11 [1, 64, 56, 56]
Sequential 3-12 [1, 64, 56, 56]
Sequential 3-13 [1, 64, 56, 56]
MaxPool2d 2-4 [1, 256, 28, 28]
InceptionBlock 2-5 [1, 512, 28, 28]
Sequential 3-14 [1, 128, 28, 28]
Sequential 3-15 [1, 128, 28, 28]
Sequential 3-16 [1, 128, 28, 28]
Sequential 3-17 [1, 128, 28, 28]
InceptionBlock 2-6 [1, 1024, 28, 28]
Sequential 3-18 [1, 256, 28, 28]
Sequential 3-19 [1, 256, 28, 28]
Sequential 3-20 [1, 256, 28, 28]
Sequential 3-21 [1, 256, 28, 28]
MaxPool2d 2-7 [1, 1024, 14, 14]
AdaptiveAvgPool2d 2-8 [1, 1024, 1, 1]
Dropout 2-9 [1, 1024]
Linear 2-10 [1, 2]"""

def _paper_rows():
    rows = []
    for line in PAPER.splitlines():
        name, idx, shape = line.split(' ', 2)
        d, i = map(int, idx.split('-'))
        rows.append((name, d, i, [int(s) for s in shape.strip('[]').split(',')]))
    return rows

n_params = lambda m: sum(p.numel() for p in m.parameters())


def test_summary_matches_the_paper_row_for_row():
    "Every layer of the write-up's summary, in order, with our depth (one less: no Lightning wrapper) and shape"
    stats = summary(InceptionNet(), (1, 3, 224, 224), depth=2, verbose=0)
    ours = [(l.class_name, l.depth, l.output_size) for l in stats.summary_list if 1 <= l.depth <= 2]
    expected = [(n, d - 1, s) for n, d, _, s in _paper_rows()[1:]]
    assert ours == expected
    assert stats.summary_list[0].output_size == [1, 2]
    assert not any(l.class_name == 'Flatten' for l in stats.summary_list)


def test_summary_depth_indices_match_the_paper_inside_a_wrapper():
    "Wrapped like the write-up's Lightning module, even torchinfo's depth-index numbers are the paper's"
    class RadiographiesLightningModel(nn.Module):
        def __init__(self): super().__init__(); self.net = InceptionNet()
        def forward(self, x): return self.net(x)
    stats = summary(RadiographiesLightningModel(), (1, 3, 224, 224), depth=3, verbose=0)
    ours = [(l.class_name, l.depth, l.depth_index, l.output_size) for l in stats.summary_list if 1 <= l.depth <= 3]
    expected = [('InceptionNet' if n == 'RadiographiesNet' else n, d, i, s) for n, d, i, s in _paper_rows()]
    assert ours == expected


def test_structure_stem_blocks_and_head():
    m = InceptionNet()
    assert [type(c) for c in m.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Dropout]
    conv = m.stem[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (3, 32, (7, 7), (2, 2))
    assert [type(c).__name__ for c in m.children()] == ['Sequential', 'InceptionBlock', 'InceptionBlock', 'MaxPool2d',
        'InceptionBlock', 'InceptionBlock', 'MaxPool2d', 'AdaptiveAvgPool2d', 'Dropout', 'Linear']
    for block, b in zip((m.block1, m.block2, m.block3, m.block4), (32, 64, 128, 256)):
        branches = list(block.children())
        assert len(branches) == 4 and all(isinstance(s, nn.Sequential) for s in branches)
        k = lambda s: [c.kernel_size for c in s if isinstance(c, (nn.Conv2d, nn.MaxPool2d))]
        assert k(block.branch1x1) == [(1, 1)] and k(block.branch3x3) == [(1, 1), (3, 3)] and k(block.branch5x5) == [(1, 1), (5, 5)]
        pool = block.branch_pool[0]
        assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1)
        assert block.branch3x3[0].out_channels == block.branch5x5[0].out_channels == b // 2  # default: half the branch
        assert block.out_channels == 4 * b
    assert (m.stem[-1].p, m.dropout.p) == (0.2, 0.5)
    assert (m.fc.in_features, m.fc.out_features) == (1024, 2)


@torch.no_grad()
def test_small_greyscale_and_odd_inputs():
    torch.manual_seed(0)
    grey = InceptionNet(in_channels=1).eval()
    assert grey(torch.randn(3, 1, 64, 64)).shape == (3, 2)
    assert grey(torch.randn(1, 1, 97, 64)).shape == (1, 2)
    assert grey(torch.randn(1, 1, InceptionNet.min_size, InceptionNet.min_size)).shape == (1, 2)
    with pytest.raises(ValueError, match='H, W >= 15'): grey(torch.randn(1, 1, 14, 64))
    with pytest.raises(ValueError, match='in_channels=3'): grey(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError): grey(torch.randn(1, 64, 64))


@torch.no_grad()
def test_create_model_and_arguments():
    assert 'inception' in model_names()
    m = create_model('inception')
    assert isinstance(m, InceptionNet) and m.arch == 'inception' and m.arch_kwargs == {}
    m = create_model('inception', in_channels=1, n_classes=3, branch_channels=(8, 8, 16, 16))
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 3) and m.fc.in_features == 64
    with pytest.raises(ValueError, match='four'): InceptionNet(branch_channels=(8, 8, 8))
    with pytest.raises(ValueError, match='reduction'): InceptionNet(reduction=0)
    with pytest.raises(ValueError, match='odd'): inception_conv(4, 4, 2)


def test_import_in_a_fresh_process():
    code = ("from fracture_course.models import InceptionNet, create_model; import torch; "
            "m = create_model('inception', in_channels=1); print(type(m).__name__, tuple(m(torch.zeros(1, 1, 64, 64)).shape))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['InceptionNet', '(1,', '2)']


def test_models_py_defines_inception_once():
    "nbdev appends notebook 07's cells to models.py: exactly once, after notebook 04's registry"
    text = (ROOT / 'fracture_course' / 'models.py').read_text()
    assert text.count('class InceptionNet(') == 1 and text.count('class InceptionBlock(') == 1
    assert text.index('def register_model') < text.index("@register_model('inception')")


def test_reductions_cut_parameters_and_keep_channels():
    with_r, without = InceptionBlock(512, 256), InceptionBlock(512, 256, reduce=False)
    x = torch.randn(1, 512, 7, 7)
    assert with_r(x).shape == without(x).shape == (1, 1024, 7, 7)
    assert n_params(with_r) < 0.5 * n_params(without)
    assert len(without.branch5x5) == 3 and without.branch5x5[0].kernel_size == (5, 5)
    assert n_params(InceptionNet()) < n_params(InceptionNet(reduction=None))
    custom = InceptionBlock(64, (16, 32, 8, 8), reduce_channels=(24, 4))
    assert custom.out_channels == 64 and (custom.branch3x3[0].out_channels, custom.branch5x5[0].out_channels) == (24, 4)
    with pytest.raises(ValueError, match='branch_channels'): InceptionBlock(32, (32, 32, 32))
    with pytest.raises(ValueError, match='reduce_channels'): InceptionBlock(32, 32, reduce_channels=(8, 8, 8))


class Corner(nn.Module):
    "P(fractured) = sigmoid(top-left pixel): not flip-invariant"
    def forward(self, x): v = x[:, 0, 0, 0]; return torch.stack([torch.zeros_like(v), v], 1)

class MeanModel(nn.Module):
    "Depends only on the image mean: flip-invariant"
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.tensor(3.))
    def forward(self, x): v = self.w * x.mean((1, 2, 3)); return torch.stack([-v, v], 1)


def test_tta_known_toy_case():
    x = torch.randn(5, 1, 6, 6); x[:, 0, 0, 0], x[:, 0, 0, -1] = 2., -2.
    y = torch.tensor([1, 0, 1, 1, 0])
    plain, _ = tta_probs(Corner(), [(x, y)], views=[lambda b: b])
    assert torch.allclose(plain, torch.sigmoid(torch.tensor(2.)).expand(5))
    p, t = flip_tta_probs(Corner(), [(x[:2], y[:2]), (x[2:], y[2:])])
    assert torch.allclose(p, torch.full((5,), 0.5)) and torch.equal(t, y)
    x[:, 0, 0, -1] = 0.  # mirror pixel 0: average of sigmoid(2) and sigmoid(0)
    p, _ = flip_tta_probs(Corner(), [(x, y)])
    assert torch.allclose(p, (torch.sigmoid(torch.tensor(2.)) + 0.5).expand(5) / 2)


def test_tta_flip_invariant_model_gives_identical_probs():
    torch.manual_seed(0)
    m, x, y = MeanModel(), torch.randn(7, 1, 16, 16), torch.randint(0, 2, (7,))
    plain, _ = tta_probs(m, [(x, y)], views=[lambda b: b])
    p, t = flip_tta_probs(m, [(x, y)])
    assert torch.allclose(p, plain) and torch.equal(t, y)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])


def test_tta_unlabelled_training_mode_and_errors():
    torch.manual_seed(0)
    m = InceptionNet(in_channels=1, branch_channels=(4, 4, 4, 4)).train()
    x = torch.randn(4, 1, 32, 32)
    p, t = flip_tta_probs(m, [x], device='cpu')
    assert t is None and p.shape == (4,) and ((p >= 0) & (p <= 1)).all()
    assert m.training  # the caller's mode is put back
    m.eval()
    expected = (m(x).softmax(1)[:, 1] + m(x.flip(-1)).softmax(1)[:, 1]) / 2
    assert torch.allclose(flip_tta_probs(m, [x])[0], expected.detach(), atol=1e-6)
    with pytest.raises(ValueError, match='no batches'): flip_tta_probs(m, [])
    with pytest.raises(ValueError, match='at least one view'): tta_probs(m, [x], views=[])


@torch.no_grad()
def test_checkpoint_round_trip(tmp_path):
    from fracture_course.learner import load_checkpoint, save_checkpoint
    torch.manual_seed(0)
    m = create_model('inception', in_channels=1, branch_channels=(4, 8, 8, 8)).eval()
    x = torch.randn(2, 1, 40, 40)
    loaded, info = load_checkpoint(save_checkpoint(tmp_path / 'inc.pt', m))
    assert info['arch'] == 'inception' and isinstance(loaded, InceptionNet)
    assert torch.allclose(loaded(x), m(x))
