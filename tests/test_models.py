"The model registry and SimpleCNN: names, errors, and shapes for every input the course uses."
import pytest
import torch
from torch import nn

from fracture_course import models
from fracture_course.models import MODELS, SimpleCNN, create_model, model_names, register_model



@pytest.fixture
def scratch_registry():
    "Names registered inside a test are removed afterwards"
    before = dict(MODELS)
    yield
    MODELS.clear(); MODELS.update(before)


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError) as e: create_model('simple_cnnn')
    msg = str(e.value)
    assert "'simple_cnnn'" in msg and 'simple_cnn' in msg.split('Known models:')[1] and 'register_model' in msg


def test_model_names_sorted_and_has_simple_cnn():
    names = model_names()
    assert names == sorted(names) and 'simple_cnn' in names and MODELS['simple_cnn'] is SimpleCNN


def test_create_model_records_arch_and_kwargs():
    m = create_model('simple_cnn', img_size=32, widths=(4, 8), in_channels=3)
    assert isinstance(m, SimpleCNN) and m.arch == 'simple_cnn'
    assert m.arch_kwargs == {'img_size': 32, 'widths': (4, 8), 'in_channels': 3}
    assert create_model('simple_cnn').arch_kwargs == {}


def test_create_model_bad_argument_names_the_model():
    with pytest.raises(TypeError, match="create_model\\('simple_cnn'.*img_sise"): create_model('simple_cnn', img_sise=64)


def test_register_model_function_factory_and_conflicts(scratch_registry):
    @register_model('linear_probe')
    def linear_probe(img_size=8): return nn.Sequential(nn.Flatten(), nn.Linear(img_size * img_size, 2))
    m = create_model('linear_probe', img_size=4)
    assert m(torch.zeros(5, 1, 4, 4)).shape == (5, 2) and m.arch == 'linear_probe'
    register_model('linear_probe')(linear_probe)  # re-registering the same thing (a re-run cell) is fine
    def other(): return nn.Identity()
    with pytest.raises(ValueError, match='already registered'): register_model('linear_probe')(other)
    with pytest.raises(ValueError, match='non-empty'): register_model('  ')


@pytest.mark.parametrize('in_channels', [1, 3])
@pytest.mark.parametrize('img_size', [8, 32, 64, 100, 128, 224])
def test_simple_cnn_shapes(in_channels, img_size):
    m = SimpleCNN(in_channels=in_channels, img_size=img_size, widths=(4, 8, 8), hidden=16)
    out = m(torch.randn(2, in_channels, img_size, img_size))
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert m.n_features == 8 * (img_size // 8) ** 2 == m.body(torch.zeros(1, in_channels, img_size, img_size)).numel()


def test_simple_cnn_default_is_the_write_up_model():
    "1x128x128 in, three conv stages, fully connected 128 hidden, 2 logits"
    m = SimpleCNN()
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    linears = [l for l in m.modules() if isinstance(l, nn.Linear)]
    assert len(convs) == 3 and convs[0].in_channels == 1 and len(linears) == 2
    assert linears[0].out_features == 128 and linears[1].out_features == 2
    assert sum(isinstance(l, nn.MaxPool2d) for l in m.modules()) == 3 and sum(isinstance(l, nn.ReLU) for l in m.modules()) == 4
    assert m(torch.randn(1, 1, 128, 128)).shape == (1, 2)


def test_simple_cnn_options():
    m = SimpleCNN(img_size=48, widths=(4, 4, 4, 4), n_classes=5, hidden=7, kernel_size=5)
    assert m(torch.randn(3, 1, 48, 48)).shape == (3, 5) and m.head[1].out_features == 7
    assert m.body[0][0].kernel_size == (5, 5)


def test_simple_cnn_wrong_input_says_what_to_do():
    m = SimpleCNN(img_size=64, widths=(4, 4, 4))
    for bad in (torch.randn(2, 1, 32, 32), torch.randn(2, 3, 64, 64), torch.randn(1, 64, 64)):
        with pytest.raises(ValueError, match=r'expects a batch \[B, 1, 64, 64\].*in_channels/img_size'): m(bad)


def test_simple_cnn_bad_arguments():
    with pytest.raises(ValueError, match='img_size=4 is too small'): SimpleCNN(img_size=4)
    with pytest.raises(ValueError, match='odd kernel_size'): SimpleCNN(kernel_size=4)
    with pytest.raises(ValueError, match='at least one width'): SimpleCNN(widths=())
    with pytest.raises(TypeError, match=r'widths is one number per conv stage, e.g. \(32,\) or \(8, 16, 32\); got 32'): create_model('simple_cnn', widths=32)


def test_models_module_exports_registry_api():
    for name in ('MODELS', 'register_model', 'create_model', 'model_names', 'SimpleCNN'): assert name in models.__all__


def test_simple_cnn_raw_pixels_say_what_to_do():
    "uint8 pixels fail early with what is wrong and what to do, not torch's dtype message from inside the convolution"
    m = SimpleCNN(img_size=16, widths=(4, 4))
    with pytest.raises(TypeError, match=r'float images, normalised .*got torch.uint8.*transforms \(get_dls\)'):
        m(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    assert m(torch.zeros(2, 1, 16, 16)).shape == (2, 2)  # floats still pass
