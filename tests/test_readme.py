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
