"README.md stays true: its two commands are the ones CI runs, and its chapter list matches nbs/."
import re
from conftest import ROOT

README = (ROOT/'README.md').read_text()
CI = (ROOT/'.ci'/'run').read_text()

def _commands():
    block = re.search(r'```bash\n(.*?)```', README, re.S).group(1)
    return [l for l in block.splitlines() if l.strip() and not l.startswith('#')]

def test_readme_opens_with_exactly_two_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].startswith('pip install ') and 'fracture-course ' in cmds[0]
    assert cmds[1].startswith('pip install -e ".[dev]"')

def test_ci_runs_the_readme_install_and_test_command():
    install, tests = _commands()[1].split(' && ', 1)
    assert install in CI
    assert re.search('^' + re.escape(tests) + r'( \|\| status=\$\?)?$', CI, re.M), 'CI must run the README test command as is'

def test_every_chapter_is_listed():
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        assert f'`{nb.stem}`' in README, f'{nb.name} is missing from the README chapter list'

def test_the_gpu_run_is_ready_to_send():
    "benchmarks/gpu: every wheel pinned once, the notebook runner and the course's own needs among them, both scripts parse"
    import subprocess
    lines = [l for l in (ROOT/'benchmarks'/'gpu'/'requirements.txt').read_text().splitlines() if l and not l.startswith('#')]
    names = [l.split('==')[0] for l in lines]
    assert all(re.fullmatch(r'[a-z0-9-]+==[\w.]+', l) for l in lines), lines
    assert len(names) == len(set(names)) and {'nbdev', 'execnb', 'nbclient', 'ipykernel', 'optuna', 'torchinfo', 'pydicom', 'fastapi'} <= set(names)
    assert not {'torch', 'torchvision', 'timm', 'lightning', 'pydicom-data'} & set(names)  # the image has the first four; the last is 34 MB
    for script in ('fetch_wheels.sh', 'full_profile.sh'):
        assert subprocess.run(['bash', '-n', str(ROOT/'benchmarks'/'gpu'/script)]).returncode == 0
