"The reference notebooks in nbs/ carry their outputs (numbers and figures, made on the quick profile) and no errors."
import json
import pytest
from conftest import ROOT

CHAPTERS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
NO_FIGURE = {'00_setup': 'settings', '11_grading': 'grading notebooks', '90_cli': 'the command line'}  # nothing to plot
REFRESH = 'refresh them with the README command under "Reference notebooks"'

def _outputs(path):
    nb = json.loads(path.read_text())
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]

def _text(o): return ''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))

@pytest.mark.parametrize('path', CHAPTERS, ids=lambda p: p.stem)
def test_chapter_shows_its_outputs(path):
    outs = _outputs(path)
    assert outs, f'{path.name} has no outputs; {REFRESH}'
    assert not [o for o in outs if o['output_type'] == 'error'], f'{path.name} has an error output; {REFRESH}'
    stderr = ''.join(_text(o) for o in outs if o.get('name') == 'stderr')
    assert 'Traceback' not in stderr and 'IProgress' not in stderr, f'{path.name}: {stderr[:300]}'
    assert not any('it/s]' in _text(o) or 'application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outs), \
        f'{path.name} has progress bars in its outputs; {REFRESH} (it sets TQDM_DISABLE=1)'
    if path.stem not in NO_FIGURE:
        assert any('image/png' in o.get('data', {}) for o in outs), f'{path.name} shows no figure; {REFRESH}'

def test_outputs_come_from_the_quick_profile_on_synthetic_data():
    "Reference outputs are the graders' and laptops' path: quick profile, built-in data"
    text = ''.join(_text(o) for p in CHAPTERS for o in _outputs(p))
    assert 'profile quick' in text and 'profile full' not in text, 'reference outputs must come from the quick profile'
