"The web demo in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium."
import argparse, os, shutil, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'

def _browser_or_skip():
    pytest.importorskip('selenium', reason='selenium is not installed (pip install -e ".[dev]")')
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing: pytest.skip(f"no headless browser: {', '.join(missing)} not found (Debian: apt-get install chromium chromium-driver)")

SERVE = ("import sys, argparse; from fracture_course.deploy import add_serve_args, serve_command; "
         "p = argparse.ArgumentParser(); add_serve_args(p); sys.exit(serve_command(p.parse_args(sys.argv[1:])))")

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "`fracture-course serve` (through serve_command) in a subprocess, for a small untrained checkpoint; (URL, an X-ray PNG)"
    _browser_or_skip()
    import numpy as np
    from PIL import Image
    from fracture_course.learner import save_checkpoint
    from fracture_course.models import create_model
    from fracture_course.transforms import grey_preset
    d = tmp_path_factory.mktemp('served')
    torch.manual_seed(0)
    ckpt = save_checkpoint(d/'model.pt', create_model('simple_cnn', img_size=64, widths=(8, 16, 32)), preprocessing=grey_preset(64).to_dict(),
                           operating_point={'threshold': 0.42, 'temperature': 1.0, 'source': 'browser test'})
    png = d/'xray.png'
    Image.fromarray((np.random.default_rng(0).random((80, 64)) * 255).astype(np.uint8)).save(png)
    yield from _serve(ckpt, png)

@pytest.fixture(scope='module')
def served_onnx(served, tmp_path_factory):
    "The same model exported to ONNX, served: (URL, an X-ray PNG)"
    from fracture_course.deploy import export_onnx
    url, png = served
    ckpt = png.parent/'model.pt'
    yield from _serve(export_onnx(ckpt, tmp_path_factory.mktemp('served_onnx')/'model.onnx'), png)

def _serve(model, png):
    "Serve `model` in a subprocess until the fixture ends; yields (URL, png)"
    import httpx
    port = free_port()
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, '-c', SERVE, str(model), '--port', str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, deadline = f'http://127.0.0.1:{port}', time.time() + 60
    try:
        while True:
            try:
                if httpx.get(url + '/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill(); pytest.fail(f'the server did not start:\n{proc.stdout.read()}')
            time.sleep(0.2)
        yield url, png
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    "Headless Chromium; its profile and the singleton folder it makes in TMPDIR go in a pytest folder, not in /tmp"
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--window-size=1000,1200'): opts.add_argument(a)
    scratch = tmp_path_factory.mktemp('chromium')
    opts.add_argument(f'--user-data-dir={scratch/"profile"}')
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, 'TMPDIR': str(scratch)}), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()

def test_upload_in_a_browser_shows_probability_call_and_overlay(served, browser):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    url, png = served
    browser.get(url + '/')
    notice = browser.find_element(By.ID, 'notice')
    assert notice.is_displayed() and 'Not for clinical use' in notice.text
    assert '0.420' in browser.find_element(By.TAG_NAME, 'body').text  # the saved threshold is on the page
    browser.find_element(By.ID, 'file').send_keys(str(png))
    browser.find_element(By.ID, 'submit').click()
    WebDriverWait(browser, 30).until(EC.visibility_of_element_located((By.ID, 'result')))
    prob, call = float(browser.find_element(By.ID, 'probability').text), browser.find_element(By.ID, 'call').text
    api = httpx.post(url + '/predict', files={'file': (png.name, png.read_bytes())}, timeout=30).json()
    assert abs(prob - api['probability']) < 1e-3 and call == api['call']
    assert call == ('fractured' if prob > 0.42 else 'not fractured')
    assert 'browser test' in browser.find_element(By.ID, 'rule').text
    img = browser.find_element(By.ID, 'overlay')
    WebDriverWait(browser, 10).until(lambda d: d.execute_script('return arguments[0].complete && arguments[0].naturalWidth', img))
    assert browser.execute_script('return arguments[0].naturalWidth', img) == 256 and img.is_displayed()
    assert notice.is_displayed() and not browser.find_element(By.ID, 'heatmap_note').is_displayed()
    assert notice.location['y'] < min(browser.find_element(By.ID, k).location['y'] for k in ('form', 'result'))  # above the form and the result

def test_an_exported_model_in_a_browser_says_why_there_is_no_heat_map(served_onnx, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    url, png = served_onnx
    browser.get(url + '/')
    assert 'onnxruntime' in browser.find_element(By.TAG_NAME, 'body').text
    browser.find_element(By.ID, 'file').send_keys(str(png))
    browser.find_element(By.ID, 'submit').click()
    WebDriverWait(browser, 30).until(EC.visibility_of_element_located((By.ID, 'result')))
    note = browser.find_element(By.ID, 'heatmap_note')
    assert note.is_displayed() and 'ONNX Runtime does not compute' in note.text and 'serve the .pt checkpoint' in note.text
    assert not browser.find_element(By.ID, 'figure').is_displayed()
    assert 'Not for clinical use' in browser.find_element(By.ID, 'notice').text  # the file's intended use

def test_a_bad_file_in_a_browser_shows_the_error_and_the_page_still_works(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    url, png = served
    bad = tmp_path/'notes.png'; bad.write_text('not an image')
    browser.get(url + '/')
    browser.find_element(By.ID, 'file').send_keys(str(bad))
    browser.find_element(By.ID, 'submit').click()
    err = WebDriverWait(browser, 30).until(EC.visibility_of_element_located((By.ID, 'error')))
    assert 'notes.png' in err.text and 'not an image' in err.text
    assert not browser.find_element(By.ID, 'result').is_displayed()
    browser.find_element(By.ID, 'file').clear()
    browser.find_element(By.ID, 'file').send_keys(str(png))
    browser.find_element(By.ID, 'submit').click()
    WebDriverWait(browser, 30).until(EC.visibility_of_element_located((By.ID, 'result')))
    assert not browser.find_element(By.ID, 'error').is_displayed()
