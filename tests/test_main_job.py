"""The README's first command, the course's main job, as a new user runs it: a fresh cache (the synthetic radiographs
are generated first), the quick profile, the built-in data. Chapter 91 shows the same run; `nbdev-test` skips it
there (flag `slow`) to keep grading quick, so this is where its lesson is checked."""
import json, os, re, shlex, subprocess, sys
from pathlib import Path
from conftest import ROOT
from fracture_course.learner import load_checkpoint

def readme_main_job() -> list[str]:
    "The arguments of `fracture-course train` in the README's first command"
    first = re.search(r'```bash\n(.*?)\n', (ROOT/'README.md').read_text()).group(1)
    args = shlex.split(first.split('&&')[1])
    assert args[:2] == ['fracture-course', 'train'] and '--out' in args, f"expected 'fracture-course train ... --out DIR' in: {first}"
    return args[2:]

def test_the_main_job_learns_the_synthetic_radiographs(tmp_path):
    args = readme_main_job()
    args[args.index('--out') + 1] = str(tmp_path/'run')  # the README writes to runs/simple_cnn
    env = {**{k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'FRACTURE_SEED')},
           'FRACTURE_CACHE_DIR': str(tmp_path/'cache'), 'FRACTURE_DATASET': 'synthetic', 'FRACTURE_PROFILE': 'quick',
           'FRACTURE_DEVICE': 'cpu'}  # the figures below are the CPU's (one thread, as the quick profile trains there)
    cli = str(Path(sys.executable).parent/'fracture-course')
    r = subprocess.run([cli, 'train', *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    # its output went to pipes, as to a log file: a line per epoch, and no progress bar redrawing itself line after line
    assert '\r' not in r.stdout + r.stderr and 'it/s' not in r.stderr, r.stderr[-2000:]
    assert any((tmp_path/'cache').rglob('manifest.csv')), 'the synthetic radiographs should have been generated in the fresh cache'
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert m['model'] == 'simple_cnn' and m['dataset'] == 'synthetic' and m['settings']['profile'] == 'quick'
    epochs = re.findall(r'^ +(\d+) +-?\d', r.stdout, re.M)  # each row of the table the Learner prints: epoch, losses, metrics
    assert [int(e) for e in epochs] == list(range(1, m['recipe']['epochs'] + 1)), r.stdout[-3000:]
    # the lesson (chapter 91 and the README: 0.909 at seed 42, 0.912 / 0.899 at seeds 0 / 1, torch 2.14.1), with a margin
    assert m['test']['auroc'] > 0.87, m['test']
    assert m['test_trivial']['auroc'] == 0.5 and m['test_at_threshold']['sensitivity'] > 0.8, m['test_at_threshold']
    # the operating point chosen on validation is the one the checkpoint carries for predict, evaluate and serve
    op = load_checkpoint(tmp_path/'run'/'best.pt')[1]['operating_point']
    assert op['threshold'] == m['threshold'] and op['tta'] is True and m['recipe']['tta'] is True  # chosen on flip-TTA probabilities
    # ... so `evaluate`, with no option, scores as training did and reproduces its test figures
    r2 = subprocess.run([cli, 'evaluate', str(tmp_path/'run'/'best.pt'), '--n-boot', '0', '--out', str(tmp_path/'eval')],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    e = json.loads((tmp_path/'eval'/'metrics.json').read_text())
    assert e['training_data_warning'] is None and e['split_seed'] == 42 and e['dataset'] == 'synthetic'  # the checkpoint's own data and split
    assert e['tta'] is True and abs(e['auroc'] - m['test']['auroc']) < 1e-3 and abs(e['sensitivity'] - m['test_at_threshold']['sensitivity']) < 1e-3, (e, m['test_at_threshold'])
    assert (tmp_path/'run'/'curves.png').stat().st_size > 10_000 and 'at threshold' in r.stdout
