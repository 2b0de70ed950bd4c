"The project's configuration: settings.ini, pyproject.toml and environment.yml agree, and config resolves them."
import configparser, os, re, subprocess, sys, tomllib
from pathlib import Path
import pytest
from conftest import ROOT
from fracture_course import config

def _name(req): return re.split(r'[<>=!~\[ ;]', req.strip(), maxsplit=1)[0].lower()

def test_environment_yml_names_the_pyproject_packages():
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    wanted = {r.replace(' ', '') for r in proj['dependencies'] + proj['optional-dependencies']['dev']}
    text = (ROOT/'environment.yml').read_text()
    lines = [l.strip()[2:].strip() for l in text.split('- pip:', 1)[1].splitlines() if l.strip().startswith('- ')]
    pip_reqs = {l.replace(' ', '') for l in lines if not l.startswith('-e')}
    assert pip_reqs == wanted
    assert '-e .[dev]' in lines

def test_settings_ini_matches_package_defaults():
    "A fresh `pip install` without the repo must behave like the repo's settings.ini"
    full, quick = config.read_settings(ROOT/'settings.ini')
    assert full == config.DEFAULTS
    assert quick == {**config.DEFAULTS, **config.QUICK}
    cp = configparser.ConfigParser(default_section='-', inline_comment_prefixes=('#',), interpolation=None)
    cp.read(ROOT/'settings.ini')
    assert set(cp.options('DEFAULT')) == set(config.DEFAULTS)

def test_profile_is_quick_under_nbdev_test_and_ci(monkeypatch):
    monkeypatch.delenv('CI', raising=False); monkeypatch.setenv('IN_TEST', '1')
    assert config.choose_profile() == ('quick', 'running under nbdev-test')
    monkeypatch.delenv('IN_TEST'); monkeypatch.setenv('CI', 'true')
    assert config.choose_profile()[0] == 'quick'
    monkeypatch.setenv('FRACTURE_PROFILE', 'full')
    assert config.choose_profile() == ('full', 'FRACTURE_PROFILE')
    assert config.get_config().image_size == config.DEFAULTS['image_size']

def test_bad_profile_and_values_say_what_is_accepted(monkeypatch):
    with pytest.raises(ValueError, match='quick, full, auto'): config.choose_profile('fast')
    monkeypatch.setenv('FRACTURE_EPOCHS', 'ten')
    with pytest.raises(ValueError, match="FRACTURE_EPOCHS.*'ten'.*whole number"): config.get_config()
    for key, bad, rule in (('EPOCHS', '0', 'between 1 and'), ('BATCH_SIZE', '-4', 'between 1 and'), ('LR', 'nan', 'between 1e-12 and 10'),
                           ('LR', 'inf', 'between'), ('SEED', '-1', 'between 0 and'), ('NUM_WORKERS', '100000', 'up to 64')):
        monkeypatch.setenv('FRACTURE_' + key, bad)  # refused here, named, not as an IndexError or numpy's error deep in training
        with pytest.raises(ValueError, match=f"FRACTURE_{key} is '{bad}'.*{rule}"): config.get_config()
        monkeypatch.delenv('FRACTURE_' + key)
    monkeypatch.setenv('FRACTURE_EPOCHS', '2'); monkeypatch.setenv('FRACTURE_DEVICE', 'tpu')
    with pytest.raises(ValueError, match='auto, cuda'): config.get_config()

def test_environment_overrides_file_and_arguments_override_environment(monkeypatch):
    monkeypatch.setenv('FRACTURE_BATCH_SIZE', '7'); monkeypatch.setenv('FRACTURE_DATASET', '/data/xr')
    cfg = config.get_config('quick')
    assert (cfg.batch_size, cfg.dataset) == (7, '/data/xr')
    assert config.get_config('quick', batch_size=3).batch_size == 3

def test_bad_settings_file_is_named(tmp_path):
    f = tmp_path/'settings.ini'; f.write_text('[DEFAULT]\nepochs = many\n')
    with pytest.raises(ValueError, match=re.escape(str(f))): config.read_settings(f)
    f.write_text('[DEFAULT]\nwidth = 3\n')
    with pytest.raises(KeyError, match='width'): config.read_settings(f)
    with pytest.raises(FileNotFoundError, match='FRACTURE_SETTINGS'):
        os.environ['FRACTURE_SETTINGS'] = str(tmp_path/'missing.ini')
        try: config.find_settings()
        finally: del os.environ['FRACTURE_SETTINGS']

def test_package_defaults_apply_outside_the_repo(tmp_path):
    code = 'import fracture_course, fracture_course.config as c; g = c.get_config("full"); print(g.settings_file, g.image_size)'
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.split() == ['None', str(config.DEFAULTS['image_size'])]

def test_seed_everything_repeats_torch_and_numpy():
    import numpy as np, torch
    config.seed_everything(3); a = (torch.rand(4), np.random.rand(4))
    config.seed_everything(3); b = (torch.rand(4), np.random.rand(4))
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all()

def test_explicit_missing_device_is_an_error():
    import torch
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    with pytest.raises(RuntimeError, match='CUDA is not available'): config.pick_device('cuda')
    with pytest.raises(ValueError, match="Unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"): config.pick_device('gpu')  # not torch's list of every device type

def test_setup_chapter_uses_one_thread_on_the_quick_profile_on_a_cpu(monkeypatch, capsys):
    "A student's quick-profile chapter runs on one thread, as the reference notebooks did; the full profile keeps torch's choice"
    import torch
    monkeypatch.delenv('IN_TEST', raising=False); monkeypatch.delenv('CI', raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert config.setup_chapter('full', device='cpu').profile == 'full' and torch.get_num_threads() == 2
        cfg = config.setup_chapter('quick', device='cpu')
        assert cfg.profile == 'quick' and torch.get_num_threads() == 1 and 'profile quick' in capsys.readouterr().out
    finally: torch.set_num_threads(before)


def test_a_quick_section_adds_to_the_quick_defaults_and_unknown_sections_are_named(tmp_path, monkeypatch):
    "A [quick] that sets only epochs kept the full profile's 224 px for every CPU user; a [full] section was ignored"
    monkeypatch.delenv('FRACTURE_IMAGE_SIZE', raising=False); monkeypatch.delenv('FRACTURE_EPOCHS', raising=False)
    (tmp_path/'s.ini').write_text('[DEFAULT]\nepochs = 20\n[quick]\nepochs = 2\n')
    full, quick = config.read_settings(tmp_path/'s.ini')
    assert (full['epochs'], full['image_size']) == (20, 224) and (quick['epochs'], quick['image_size'], quick['n_trials']) == (2, 64, 4)
    for sections in ('[full]\nepochs = 2\n', '[Default]\nepochs = 2\n', '[DEFAULT]\nepochs = 2\n[Quick]\nepochs = 1\n'):
        (tmp_path/'bad.ini').write_text(sections)
        with pytest.raises(ValueError, match=r'bad\.ini: unknown section\(s\) \[\w+\]; the sections are \[DEFAULT\] \(the full profile\) and \[quick\]'):
            config.read_settings(tmp_path/'bad.ini')
    (tmp_path/'bin.ini').write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r'bin\.ini is not a valid settings file: it is not text'): config.read_settings(tmp_path/'bin.ini')


def test_a_misspelt_fracture_variable_is_named_not_ignored_in_silence(monkeypatch):
    monkeypatch.setenv('FRACTURE_EPOCH', '1'); monkeypatch.setenv('FRACTURE_COURSE_PIP', 'x')
    config._warned_env.discard('FRACTURE_EPOCH')
    with pytest.warns(config.SettingWarning, match='FRACTURE_EPOCH is not a course setting and is ignored; did you mean FRACTURE_EPOCHS') as w:
        config.get_config()
    assert not any('COURSE_PIP' in str(x.message) for x in w)
    monkeypatch.delenv('FRACTURE_EPOCH'); monkeypatch.setenv('FRACTURE_HOME', '/x'); config._warned_env.discard('FRACTURE_HOME')
    with pytest.warns(UserWarning, match='FRACTURE_HOME is not a course setting and is ignored; the settings are FRACTURE_DATASET') as w:
        config.get_config()  # no false "did you mean": nothing is close


def test_a_pinned_kaggle_version_is_a_dataset_name(monkeypatch):
    monkeypatch.setenv('FRACTURE_DATASET', 'kaggle:owner/name/versions/3')
    assert config.get_config().dataset == 'kaggle:owner/name/versions/3'


@pytest.mark.parametrize('value', ['kaggle:bad', 'kaggle:', 'kaggle:a/b/c', 'kaggle:a/b/versions/x'])
def test_a_kaggle_dataset_must_be_owner_slash_name(monkeypatch, value):
    monkeypatch.setenv('FRACTURE_DATASET', value)
    with pytest.raises(ValueError, match="from FRACTURE_DATASET is .*a Kaggle dataset is named kaggle:OWNER/NAME"): config.get_config()


def test_bars_are_off_in_a_log_even_after_ipykernel_was_imported():
    "A test run or script that imported ipykernel (grading does) is no notebook: its bars would pile up in the log"
    import contextlib, io, sys
    import ipykernel.zmqshell  # noqa: F401  (imported, as a grader's or a test's process may have)
    from fracture_course.config import bars_redraw, progress_bar
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert not bars_redraw() and progress_bar(range(3)).disable
        list(progress_bar(range(3), desc='x'))
    assert err.getvalue() == ''
    class Tty(io.StringIO):
        def isatty(self): return True
    assert bars_redraw(Tty()) and not bars_redraw(io.StringIO())

def test_a_settings_file_given_that_is_not_there_is_refused(tmp_path):
    from fracture_course.config import get_config
    with pytest.raises(FileNotFoundError, match=r'nowhere.ini not found; give the path of a settings.ini'): get_config('quick', settings=tmp_path/'nowhere.ini')
