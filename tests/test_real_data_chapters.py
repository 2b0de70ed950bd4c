"""Every chapter runs top to bottom on real X-rays: nbdev-test with FRACTURE_DATASET pointing at FracAtlas (quick profile),
with `--flags slow` so that chapter 91's main job, which a plain `nbdev-test` skips, runs too."""
import os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

def test_every_chapter_runs_on_fracatlas(fracatlas_dir, tmp_path):
    env = {**os.environ, 'FRACTURE_DATASET': str(fracatlas_dir), 'TQDM_DISABLE': '1'}
    nbdev_test = Path(sys.executable).parent/'nbdev-test'
    r = subprocess.run([str(nbdev_test), '--n-workers', '2', '--timing', '--flags', 'slow', str(ROOT/'nbs')], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert 'Success' in r.stdout + r.stderr
