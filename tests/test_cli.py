"The `fracture-course` command line: subcommands, JSON output, and errors that say what is accepted."
import json, os, subprocess, sys
from pathlib import Path
import pytest

CLI = str(Path(sys.executable).parent/'fracture-course')

def run(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith('FRACTURE_')}
    e.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=e)

def test_info_prints_profile_device_and_versions():
    r = run('info')
    assert r.returncode == 0, r.stderr
    assert 'profile quick' in r.stdout and 'device cpu' in r.stdout and 'torch' in r.stdout

def test_info_json_is_complete():
    d = json.loads(run('info', '--json', '--profile', 'full').stdout)
    assert d['settings']['profile'] == 'full' and d['settings']['image_size'] == 224
    assert d['versions']['torch'] and d['data_source']

def test_help_lists_every_command_without_importing_the_chapters():
    from fracture_course.cli import COMMANDS
    code = ('import sys\nfrom fracture_course.cli import main\ntry: main(["--help"])\nexcept SystemExit: pass\n'
            'print("heavy:", sorted(m for m in ("torch", "timm", "optuna", "captum", "pandas") if m in sys.modules))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'heavy: []' in r.stdout and all(name in r.stdout for name, *_ in COMMANDS), r.stdout + r.stderr

def test_commands_that_compute_no_metric_leave_torchmetrics_unimported():
    "Importing torchmetrics takes about 2 s: predict, export, serve and every --help start without it; the first metric imports it"
    code = ('import sys\nfrom fracture_course.cli import build_parser\nbuild_parser(["predict"]); build_parser(["evaluate"]); build_parser(["train"])\n'
            'print("before:", "torchmetrics" in sys.modules)\nimport torch\nfrom fracture_course.learner import auroc\n'
            'print("auroc:", auroc(torch.tensor([0.2, 0.9, 0.4]), torch.tensor([0, 1, 1])), "after:", "torchmetrics" in sys.modules)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'before: False' in r.stdout and 'auroc: 1.0 after: True' in r.stdout, r.stdout + r.stderr

def test_the_console_script_prints_warnings_as_plain_lines():
    "A user of the command reads `warning: ...`, not the library's file, line number and source line; in-process callers keep Python's own"
    code = ('import sys, warnings\nfrom fracture_course.cli import main\nmain(["audit", "/nonexistent"])\nwarnings.warn("5 truncated image(s)")\n'
            'sys.argv = ["fracture-course", "audit", "/nonexistent"]\nmain()\nwarnings.warn("3 truncated image(s)")')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'UserWarning: 5 truncated image(s)' in r.stderr and 'warning: 3 truncated image(s)' in r.stderr, r.stderr
    assert 'UserWarning: 3' not in r.stderr

def test_unknown_subcommand_and_bad_values_exit_non_zero_with_choices():
    r = run('bogus')
    assert r.returncode == 2 and "choose from" in r.stderr and 'info' in r.stderr
    r = run('info', '--profile', 'fast')
    assert r.returncode == 2 and "'quick', 'full', 'auto'" in r.stderr
    r = run('info', env={'FRACTURE_EPOCHS': 'x'})
    assert r.returncode == 1 and 'FRACTURE_EPOCHS' in r.stderr

def test_synth_writes_a_dataset_and_rejects_bad_values(tmp_path):
    r = run('synth', str(tmp_path/'s'), '--n', '20', '--size', '32', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'s'/'manifest.csv').is_file() and len(list((tmp_path/'s').rglob('*.png'))) == 20
    r = run('synth', str(tmp_path/'s'), '--n', '10', '--size', '32', '--no-progress')  # another dataset there: kept
    assert r.returncode == 1 and 'already holds another synthetic dataset, with n=20 (asked 10)' in r.stderr and '--overwrite' in r.stderr
    r = run('synth', str(tmp_path/'s'), '--n', '10', '--size', '32', '--no-progress', '--overwrite')
    assert r.returncode == 0 and len(list((tmp_path/'s').rglob('*.png'))) == 10
    r = run('synth', str(tmp_path/'t'), '--n', '0')
    assert r.returncode != 0 and 'n' in r.stderr
    r = run('synth', str(tmp_path/'u'), '--n', '3', '--size', '60000', '--no-progress')  # refused before any rendering, not a MemoryError
    assert r.returncode == 1 and 'size must be at most 4096' in r.stderr and not (tmp_path/'u').exists()
    (tmp_path/'afile').write_text('not a folder')
    r = run('synth', str(tmp_path/'afile'/'sub'), '--n', '20', '--size', '32', '--no-progress')  # an OSError: a message, not a traceback
    assert r.returncode == 1 and 'Traceback' not in r.stderr and 'fracture-course synth: error:' in r.stderr and 'afile' in r.stderr

def test_student_and_grade_commands(tmp_path):
    import shutil
    ref = tmp_path/'ref'; ref.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1]/'nbs'/'00_setup.ipynb', ref)
    r = run('student', str(ref), str(tmp_path/'student'))
    assert r.returncode == 0, r.stderr
    assert 'raise NotImplementedError()' in (tmp_path/'student'/'00_setup.ipynb').read_text()
    subs = tmp_path/'subs'; subs.mkdir(); shutil.copy(ref/'00_setup.ipynb', subs)
    (subs/'broken.ipynb').write_text('{not json')
    r = run('grade', str(subs), '--reference', str(ref), '--out', str(tmp_path/'g'), '--timeout', '60')
    assert (tmp_path/'g'/'grades.json').is_file() and (tmp_path/'g'/'grades.csv').is_file(), r.stderr
    assert '00_setup' in r.stdout and 'broken' in r.stdout
    r = run('grade', str(tmp_path/'nowhere'))
    assert r.returncode != 0 and 'nowhere' in r.stderr

def test_grade_help_says_what_it_accepts_and_a_script_is_refused_without_a_traceback(tmp_path):
    r = run('grade', '--help')
    text = ' '.join(r.stdout.split())  # argparse wraps to the terminal's width
    assert r.returncode == 0 and '--reference REF the reference notebooks, matched by file name: a folder (the course nbs/) or one notebook' in text, text
    assert '--reference DIR' not in text  # a notebook works too
    (tmp_path/'07_inception.py').write_text('x = 1\n')
    r = run('grade', str(tmp_path/'07_inception.py'))
    assert r.returncode == 1 and 'Traceback' not in r.stderr and 'not a notebook' in r.stderr and '07_inception.py' in r.stderr, r.stderr
    assert r.stdout == '' and not list(tmp_path.glob('grades*'))
