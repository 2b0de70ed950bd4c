"Shared fixtures: the repository root, and the real FracAtlas copy that sits beside the checkout."
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
FRACATLAS = Path(os.environ.get('FRACATLAS_DIR', SHARED / 'data' / 'FracAtlas'))

@pytest.fixture
def fracatlas_dir():
    "The real FracAtlas copy in ../shared/data/FracAtlas, or a skip that says why it is missing"
    if not (FRACATLAS / 'dataset.csv').is_file():
        pytest.skip(f'real FracAtlas data not found at {FRACATLAS} (it sits in ../shared beside the checkout; '
                    'set FRACATLAS_DIR to use another copy)')
    return FRACATLAS

@pytest.fixture(autouse=True)
def _no_course_env(monkeypatch):
    "Tests start from the package's settings, whatever FRACTURE_* variables the shell has"
    for k in list(os.environ):
        if k.startswith('FRACTURE_'): monkeypatch.delenv(k)

@pytest.fixture(autouse=True, scope='session')
def _one_torch_thread():
    "The tests' tensors are tiny: one thread is faster, and immune to other processes competing for the cores"
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def bar_xrays(root, counts=(('train', 24), ('val', 8), ('test', 8)), seed=0):
    "Split folders of 40-px images whose fractured ones carry a bright bar (learnable in an epoch); returns `root`"
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    for s, n in counts:
        for c in ('fractured', 'not fractured'):
            d = Path(root)/s/c; d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 80, (40, 40), dtype=np.uint8)
                if c == 'fractured': a[18:22, 5:35] = 250
                Image.fromarray(a).save(d/f'{c[:3]}{i}.png')
    return Path(root)
