"Deployment: ONNX export and its parity with PyTorch, the export and predict commands, the web API (bad uploads, a real server under concurrent load)."
import argparse, base64, io, json, os, socket, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fracture_course.data import load_dataset
from fracture_course.evaluate import load_inputs, predict_inputs
from fracture_course.learner import save_checkpoint
from fracture_course.models import create_model
from fracture_course.transforms import eval_tfms, grey_preset, imagenet_preset
from fracture_course import deploy
from fracture_course.deploy import OnnxModel, Predictor, export_onnx, make_app

OP = {'threshold': 0.3, 'temperature': 1.5, 'target_sensitivity': 0.9, 'source': 'test fixture'}

def tiny_checkpoint(path, arch='simple_cnn', preset=None, x=None, **kwargs):
    "An untrained model saved as `fracture-course train` would, with an operating point; `x`: images to spread its answers over"
    torch.manual_seed(0)
    preset = preset or grey_preset(64)
    if arch in ('simple_cnn', 'enhanced_cnn'): kwargs = {'img_size': preset.size, 'widths': (8, 16, 32), **kwargs}
    if arch in ('resnet18', 'densenet121', 'efficientnet_lite0'): kwargs = {'pretrained': False, **kwargs}
    if arch == 'inception': kwargs = {'stem_channels': 8, 'branch_channels': (8, 8, 16, 16), **kwargs}
    model = create_model(arch, in_channels=preset.channels, **kwargs)
    if x is not None: spread_answers(model.eval(), eval_tfms(preset)(x))
    return save_checkpoint(path, model, preprocessing=preset.to_dict(), operating_point=OP)

@torch.no_grad()
def spread_answers(model, x):
    "Untrained models answer about the same to every image: rescale the head so the logit margin has mean 0 and std 2 on `x`"
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    margin = lambda: (lambda l: l[:, 1] - l[:, 0])(model(x))
    head.weight.mul_(2 / margin().std())
    head.bias[1] -= margin().mean()

def png_bytes(a:np.ndarray, fmt='PNG') -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, fmt); return b.getvalue()

@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    "A small synthetic dataset (64 px) and its test split"
    from fracture_course.synthetic import write_synthetic_dataset
    root = write_synthetic_dataset(tmp_path_factory.mktemp('synth')/'ds', n=80, size=64, seed=3, progress=False)
    data = load_dataset(root)
    return data, [o.path for o in data.split('test')]

@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp('ckpt')/'model.pt')

@pytest.fixture(scope='module')
def onnx_file(ckpt):
    return export_onnx(ckpt, ckpt.parent/'model.onnx')

@pytest.fixture(scope='module')
def xray(synth):
    "(bytes, path) of one PNG radiograph"
    return synth[1][0].read_bytes(), synth[1][0]

# --- export and parity -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch, preset', [('simple_cnn', grey_preset(64)), ('enhanced_cnn', grey_preset(64)),
                                          ('inception', imagenet_preset(64)), ('resnet18', imagenet_preset(64))])
def test_onnx_runtime_agrees_with_pytorch_on_the_test_split(tmp_path, synth, arch, preset):
    x, ok, failed = load_inputs(synth[1], preset)
    ck = tiny_checkpoint(tmp_path/'m.pt', arch, preset, x)
    out = export_onnx(ck, tmp_path/'m.onnx')
    m = OnnxModel(out, threads=1)
    assert m.arch == arch and m.preset == preset and m.class_names == ['not fractured', 'fractured']
    assert m.operating_point['threshold'] == OP['threshold'] and m.operating_point['temperature'] == OP['temperature']
    assert 'test fixture' in m.operating_point['source']
    assert not failed and x.dtype == torch.uint8 and x.shape[1:] == (1, preset.resize, preset.resize)
    model, _ = deploy.load_checkpoint(ck)
    want = predict_inputs(model, x, preset, temperature=OP['temperature'])
    assert want.std() > 0.1, 'the model must tell the images apart for the comparison to mean something'
    for bs in (1, 7, 64):  # the batch dimension is dynamic
        assert (m.predict(x, batch_size=bs) - want).abs().max() < 1e-4
    # the temperature is inside the graph: without it the probabilities differ
    assert (predict_inputs(model, x, preset) - want).abs().max() > 1e-4

def test_onnx_model_checks_its_input(onnx_file):
    m = OnnxModel(onnx_file)
    with pytest.raises(ValueError, match=r'uint8 images \[N, 1, 64, 64\]'): m.predict(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match='uint8'): m.predict(np.zeros((2, 1, 32, 32), np.uint8))
    assert len(m.predict(np.zeros((0, 1, 64, 64), np.uint8))) == 0

def export_args(argv):
    p = argparse.ArgumentParser(); deploy.add_export_args(p); return p.parse_args(argv)

def test_export_command_writes_a_checked_model(ckpt, tmp_path, capsys):
    out = tmp_path/'sub'/'exported.onnx'
    assert deploy.export_command(export_args([str(ckpt), '--format', 'onnx', '--out', str(out)])) == 0
    said = capsys.readouterr().out
    assert out.is_file() and 'Wrote' in said and 'threshold 0.300' in said and 'agree within' in said
    assert not list(out.parent.glob('*.tmp'))
    assert OnnxModel(out).arch == 'simple_cnn'
    assert f'Intended use, in the file: {deploy.NOTICE}' in said  # the intended use, as the file carries it
    assert 'The export and the check took' in said and "the command's start, which loads PyTorch, not counted" in said  # what the time covers

def test_the_intended_use_travels_in_the_onnx_file(onnx_file, synth, tmp_path, capsys):
    "The notice is in the metadata, read back by OnnxModel and served; a file exported before it travelled falls back to the course's"
    import onnx
    from fastapi.testclient import TestClient
    m = OnnxModel(onnx_file)
    assert m.meta['intended_use'] == m.notice == deploy.NOTICE
    proto = onnx.load(onnx_file)
    mine = [p for p in proto.metadata_props if p.key == deploy.META + 'intended_use']
    assert len(mine) == 1 and json.loads(mine[0].value) == deploy.NOTICE
    mine[0].value = json.dumps('Teaching only: another intended use.')
    onnx.save(proto, tmp_path/'other.onnx')
    c = TestClient(make_app(tmp_path/'other.onnx'))  # the file's own notice, wherever the server shows one
    assert OnnxModel(tmp_path/'other.onnx').notice == 'Teaching only: another intended use.'
    assert c.get('/health').json()['notice'] == c.get('/nope').json()['notice'] == 'Teaching only: another intended use.'
    assert 'Teaching only: another intended use.' in c.get('/').text and deploy.NOTICE not in c.get('/').text
    assert deploy.predict_command(predict_args([str(tmp_path/'other.onnx'), str(synth[1][0]), '--csv', str(tmp_path/'o.csv')])) == 0
    assert '# Teaching only: another intended use.' in capsys.readouterr().out  # predict says the file's own notice too
    assert 'Teaching only: another intended use.' in (tmp_path/'o.csv').read_text() and deploy.NOTICE not in (tmp_path/'o.csv').read_text()
    proto.metadata_props.remove(mine[0])
    onnx.save(proto, tmp_path/'older.onnx')
    assert OnnxModel(tmp_path/'older.onnx').notice == deploy.NOTICE  # exported before the intended use travelled

def test_export_command_bad_inputs(ckpt, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='nowhere.pt'): deploy.export_command(export_args([str(tmp_path/'nowhere.pt')]))
    foreign = tmp_path/'foreign.pt'; torch.save({'w': torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match='not a fracture_course checkpoint'): deploy.export_command(export_args([str(foreign)]))
    with pytest.raises(SystemExit) as e: export_args([str(ckpt), '--format', 'tflite'])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(ValueError, match='is a folder'): deploy.export_command(export_args([str(ckpt), '--out', str(tmp_path)]))
    blocker = tmp_path/'afile'; blocker.write_text('x')
    with pytest.raises(ValueError, match='cannot write .*choose another --out'):
        deploy.export_command(export_args([str(ckpt), '--out', str(blocker/'model.onnx')]))
    with pytest.raises(ValueError, match='is the checkpoint itself'): deploy.export_command(export_args([str(ckpt), '--out', str(ckpt)]))
    assert ckpt.is_file()
    with pytest.raises(ValueError, match='model.txt: the name must end in .onnx'): deploy.export_command(export_args([str(ckpt), '--out', str(tmp_path/'model.txt')]))
    (tmp_path/'m.onnx').write_bytes(b'x')
    with pytest.raises(ValueError, match='m.onnx is already an ONNX model'): deploy.export_command(export_args([str(tmp_path/'m.onnx')]))
    assert not (tmp_path/'model.txt').exists()

def test_several_files_in_one_request_are_refused_not_half_read(client, xray):
    "Two 'file' parts: which one would be scored? Neither: 400, naming them; the server goes on"
    r = client.post('/predict', files=[('file', ('first.png', b'garbage')), ('file', ('second.png', xray[0]))])
    assert r.status_code == 400 and '2 files in one request (first.png, second.png)' in r.json()['error']
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_checkpoint_with_nan_weights_is_refused_where_it_is_loaded(ckpt, tmp_path):
    "A diverged training's weights: refused by name (predict, evaluate, export and serve all load through load_checkpoint)"
    from fracture_course.learner import load_checkpoint, read_checkpoint
    c = read_checkpoint(ckpt); k = next(k for k, v in c['state_dict'].items() if v.is_floating_point())
    c['state_dict'][k] = torch.full_like(c['state_dict'][k], float('nan')); torch.save(c, tmp_path/'nan.pt')
    with pytest.raises(ValueError, match=f'nan.pt holds NaN or infinite weights \\({k}\\).*diverged'): load_checkpoint(tmp_path/'nan.pt')

def test_onnx_files_that_are_not_ours(tmp_path):
    import onnx
    from onnx import helper, TensorProto
    bad = tmp_path/'bad.onnx'; bad.write_text('not a model')
    with pytest.raises(ValueError, match='could not be loaded as an ONNX model'): OnnxModel(bad)
    g = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    plain = tmp_path/'plain.onnx'; onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 18)]), plain)
    with pytest.raises(ValueError, match='not one written by fracture-course export'): OnnxModel(plain)
    with pytest.raises(FileNotFoundError, match='missing.onnx'): OnnxModel(tmp_path/'missing.onnx')

def test_an_onnx_model_renamed_without_its_suffix_is_named_as_one(onnx_file, ckpt, synth, tmp_path):
    "predict, evaluate and serve tell ONNX from PyTorch by the suffix; an ONNX file under another name says so"
    import shutil
    from fracture_course.learner import load_checkpoint
    for name in ('model', 'model.pt'):
        shutil.copy(onnx_file, tmp_path/name)
        with pytest.raises(ValueError, match=rf"{name} is an ONNX model, not a PyTorch checkpoint.*\.onnx suffix \(e\.g\. .*model\.onnx\)"):
            deploy.predict_command(predict_args([str(tmp_path/name), str(synth[1][0])]))
        with pytest.raises(ValueError, match='is an ONNX model'): Predictor(tmp_path/name)
    with pytest.raises(ValueError, match=r"model\.onnx is an ONNX model \(written by fracture-course export\); this needs the PyTorch checkpoint \(\.pt\)"):
        load_checkpoint(onnx_file)  # evaluate, export: the .onnx already has its suffix, so that is not the advice
    (tmp_path/'noise.pt').write_bytes(b'\x08' + bytes(range(200)))  # starts like an ONNX file, is none
    with pytest.raises(ValueError, match='could not be read as a checkpoint.*not a PyTorch file'): load_checkpoint(tmp_path/'noise.pt')

# --- predict with an exported model ----------------------------------------------------------------------------

def predict_args(argv):
    p = argparse.ArgumentParser(); deploy.add_predict_args(p); return p.parse_args(argv)

def table(out:str) -> dict:
    "{image: (probability, call)} from predict's output"
    rows = [l.split('\t') for l in out.splitlines() if l and not l.startswith(('#', 'probability'))]
    return {r[2]: (float(r[0]), r[1]) for r in rows}

def test_predict_runs_onnx_and_checkpoint_alike(ckpt, onnx_file, synth, tmp_path, capsys):
    files = [str(p) for p in synth[1][:5]]
    broken = tmp_path/'broken.png'; broken.write_bytes(b'\x89PNG\r\n\x1a\n not really')
    assert deploy.predict_command(predict_args([str(onnx_file), *files, str(broken), '--csv', str(tmp_path/'onnx.csv')])) == 1
    r = capsys.readouterr()
    assert 'ONNX Runtime' in r.out and 'threshold 0.3000 (saved in the model: test fixture)' in r.out
    import csv
    assert [(row['image'], row['call'] == 'unreadable') for row in csv.DictReader(open(tmp_path/'onnx.csv'))] == [(f, False) for f in files] + [(str(broken), True)]
    assert 'broken.png' in r.err and 'broken.png' not in table(r.out)
    onnx_rows = table(r.out)
    assert deploy.predict_command(predict_args([str(ckpt), *files])) == 0
    r = capsys.readouterr()
    assert 'threshold 0.300' in r.out and 'test fixture' in r.out
    pt_rows = table(r.out)
    assert set(onnx_rows) == set(pt_rows) == set(files)
    for f in files:
        assert abs(onnx_rows[f][0] - pt_rows[f][0]) <= 2e-4 and onnx_rows[f][1] == pt_rows[f][1]
        assert onnx_rows[f][1] == ('fractured' if onnx_rows[f][0] > 0.3 else 'not fractured')
    assert deploy.predict_command(predict_args([str(onnx_file), files[0], '--threshold', '0.99'])) == 0
    out = capsys.readouterr().out
    assert 'threshold 0.9900 (--threshold)' in out and table(out)[files[0]][1] == 'not fractured'

def test_predict_overlays_state_the_call_at_the_saved_threshold(synth, tmp_path, capsys, monkeypatch):
    "P 0.064 at a saved threshold of 0.062 is a positive call: the overlay's title says so, not the bare probability that looks negative"
    from fracture_course import interpret
    from fracture_course.learner import update_checkpoint
    titles = {}
    draw = interpret._overlay_png
    def drawn(path, x, heat, preset, title): titles[Path(path).name] = title; return draw(path, x, heat, preset, title)
    monkeypatch.setattr(interpret, '_overlay_png', drawn)
    f = synth[1][0]
    ck = tiny_checkpoint(tmp_path/'m.pt')
    model, info = deploy.load_checkpoint(ck)
    preset = deploy.Preset.from_dict(info['preprocessing'])
    p = predict_inputs(model, load_inputs([f], preset)[0], preset, temperature=OP['temperature']).item()
    thr = max(p - 0.002, 0.0)  # just below: above it by less than a glance tells
    update_checkpoint(ck, operating_point={**OP, 'threshold': thr})
    out = tmp_path/'overlays'
    assert deploy.predict_command(predict_args([str(ck), str(f), '--heatmaps', str(out)])) == 0
    name = f'{Path(f).stem}_layercam.png'
    assert (out/name).stat().st_size > 1000 and f'\tfractured\t{f}' in capsys.readouterr().out
    assert titles[name] == f'fractured: P {p:.3f} > threshold {thr:.3f}', titles
    assert deploy.predict_command(predict_args([str(ck), str(f), '--heatmaps', str(out), '--threshold', f'{p + 0.01:.4f}'])) == 0  # --threshold wins
    assert titles[name] == f'not fractured: P {p:.3f} <= threshold {p + 0.01:.3f}', titles

def test_predict_names_images_too_small_to_score_and_scores_the_rest(ckpt, onnx_file, synth, tmp_path, capsys):
    from PIL import Image
    Image.new('L', (1, 1)).save(tmp_path/'pixel.png'); Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)).save(tmp_path/'smallest.png')
    for model in (ckpt, onnx_file):
        args = [str(model), str(synth[1][0]), str(tmp_path/'pixel.png'), str(tmp_path/'smallest.png')]
        assert deploy.predict_command(predict_args(args)) == 1  # one file was not scored
        r = capsys.readouterr()
        assert 'pixel.png: 1 x 1 pixels is too small to show a fracture (at least 32 a side)' in r.err
        assert set(table(r.out)) == {str(synth[1][0]), str(tmp_path/'smallest.png')}

def test_predict_onnx_refuses_heatmaps_and_tta(onnx_file, synth, tmp_path):
    f = str(synth[1][0])
    with pytest.raises(ValueError, match='--heatmaps.*Grad-CAM.*pass the .pt checkpoint'): deploy.predict_command(predict_args([str(onnx_file), f, '--heatmaps', str(tmp_path)]))
    with pytest.raises(ValueError, match='--gradcam needs the PyTorch model'): deploy.predict_command(predict_args([str(onnx_file), f, '--gradcam', str(tmp_path)]))
    with pytest.raises(ValueError, match='--tta'): deploy.predict_command(predict_args([str(onnx_file), f, '--tta']))
    with pytest.raises(ValueError, match='--threshold'): deploy.predict_command(predict_args([str(onnx_file), f, '--threshold', '2']))

# --- the web API -----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def client(ckpt):
    from fastapi.testclient import TestClient
    return TestClient(make_app(ckpt, max_upload_mb=0.25))

def bomb_png(w=30000, h=30000) -> bytes:
    "A tiny PNG whose header claims w x h pixels (a decompression bomb)"
    import struct, zlib
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))

def test_page_and_health(client):
    page = client.get('/')
    assert page.status_code == 200 and page.headers['content-type'].startswith('text/html')
    html = page.text
    assert 'Not for clinical use' in html and 'id="file"' in html and 'type="file"' in html
    body = html[html.index('<body>'):]  # the notice comes right under the title, before the model, the form and any result
    assert body.index('</h1>') < body.index('id="notice"') < min(body.index(k) for k in ('Model:', 'id="form"', 'id="result"', '<script'))
    assert '<p' not in body[:body.index('<p id="notice"')]
    assert 'src="http' not in html and 'href="http' not in html and '@import' not in html  # no external assets: works offline
    assert client.get('/docs').status_code == 404  # FastAPI's docs page would load scripts from a CDN
    h = client.get('/health').json()
    assert h['status'] == 'ok' and h['model'] == 'simple_cnn' and h['threshold'] == 0.3 and h['runtime'] == 'pytorch'
    assert h['validation'] is None and 'validation split it was chosen on' not in html  # a checkpoint that does not record it: nothing said

VALIDATION = {'sensitivity': 0.9, 'specificity': 0.333, 'precision': 0.232, 'images': 319, 'fractures': 58}

def test_what_the_threshold_gave_on_validation_is_shown_on_the_page_and_in_health(tmp_path):
    "From a checkpoint and from its ONNX export alike; a NaN, an infinity or an entry that is no figures never breaks the page"
    from fastapi.testclient import TestClient
    from fracture_course.learner import update_checkpoint
    ck = tiny_checkpoint(tmp_path/'v.pt')
    update_checkpoint(ck, operating_point={**OP, 'validation': VALIDATION})
    for path in (ck, export_onnx(ck, tmp_path/'v.onnx')):
        c = TestClient(make_app(path))
        assert c.get('/health').json()['validation'] == VALIDATION, path
        html = c.get('/').text
        assert ('on the validation split it was chosen on (319 images, 58 fractured): sensitivity 0.90' in html and 'specificity 0.33' in html
                and 'precision 0.23' in html and 'Measured on validation images' in html), path
    assert OnnxModel(tmp_path/'v.onnx').meta['operating_point']['validation'] == VALIDATION  # in the file's metadata
    for entry, says in [({**VALIDATION, 'precision': float('nan')}, 'specificity 0.33'), ({**VALIDATION, 'precision': float('inf')}, 'specificity 0.33'),
                        ('high', None), ({'sensitivity': None}, None)]:
        update_checkpoint(ck, operating_point={**OP, 'validation': entry})
        c = TestClient(make_app(ck))
        h, page = c.get('/health'), c.get('/')
        assert h.status_code == page.status_code == 200, entry
        assert (says in page.text and 'precision' not in page.text.split('id="validation"')[1].split('</p>')[0]) if says else 'id="validation"' not in page.text
        assert h.json()['validation'] == ({**VALIDATION, 'precision': None} if says else None)

def test_every_error_has_the_api_shape(client):
    "A wrong path, a wrong method and a body that is not multipart answer {'error', 'notice'} as /predict's own errors do"
    for r, status, says in [(client.get('/nope'), 404, 'GET /nope: Not Found;'), (client.get('/predict'), 405, 'GET /predict: Method Not Allowed;'),
                            (client.post('/predict', content=b'garbage', headers={'content-type': 'multipart/form-data'}), 400, 'POST /predict: ')]:
        d = r.json()
        assert r.status_code == status and set(d) == {'error', 'notice'} and d['error'].startswith(says), (status, d)
    assert client.get('/predict').headers['allow'] == 'POST' and 'Not Found' in client.get('/nope').json()['error']
    assert client.get('/health').status_code == 200  # still up

def test_predict_a_png(client, ckpt, xray):
    data, path = xray
    r = client.post('/predict', files={'file': ('knee.png', data, 'image/png')})
    assert r.status_code == 200, r.text
    d = r.json()
    assert {'probability', 'call', 'threshold', 'threshold_source', 'model', 'temperature', 'notice'} <= set(d)
    assert 'heatmap_png' not in d and d['file'] == 'knee.png' and d['model'] == 'simple_cnn'
    assert d['threshold'] == 0.3 and 'test fixture' in d['threshold_source'] and d['temperature'] == 1.5
    assert d['call'] == ('fractured' if d['probability'] > 0.3 else 'not fractured')
    model, info = deploy.load_checkpoint(ckpt)
    preset = deploy.Preset.from_dict(info['preprocessing'])
    want = predict_inputs(model, load_inputs([path], preset)[0], preset, temperature=1.5).item()
    assert abs(d['probability'] - want) < 1e-5  # the upload is read as the command line reads the file
    g = client.post('/predict?heatmap=true', files={'file': ('knee.png', data)}).json()
    png = base64.b64decode(g['heatmap_png'])
    assert png.startswith(b'\x89PNG') and Image.open(io.BytesIO(png)).size == (256, 256)
    assert abs(g['probability'] - d['probability']) < 1e-6 and g['heatmap'] == 'LayerCAM at body.1'  # 16 x 16 maps at 64 px
    old = client.post('/predict?gradcam=true', files={'file': ('knee.png', data)}).json()  # the option's name before ?heatmap
    assert old['heatmap_png'] == old['gradcam_png'] == g['heatmap_png'] and 'gradcam_png' not in g
    from fastapi.testclient import TestClient
    gc = TestClient(make_app(ckpt, cam='gradcam'))
    assert gc.post('/predict?heatmap=true', files={'file': ('knee.png', data)}).json()['heatmap'] == 'Grad-CAM at body.2'
    assert 'Grad-CAM at body.2: the places' in gc.get('/').text and 'LayerCAM at body.1: the places' in client.get('/').text

def test_predict_a_jpeg_and_greyscale_16bit(client):
    a = (np.random.default_rng(0).random((90, 70)) * 255).astype(np.uint8)
    assert client.post('/predict', files={'file': ('x.jpg', png_bytes(a, 'JPEG'))}).status_code == 200
    a16 = (a.astype(np.uint16) * 200)
    assert client.post('/predict', files={'file': ('x16.png', png_bytes(a16))}).status_code == 200

@pytest.mark.parametrize('name, content, status, says', [
    ('empty.png', b'', 400, 'empty file'),
    ('notes.png', b'this is not an image at all', 422, 'not an image'),
    ('cut.png', None, 422, 'truncated'),
    ('head.jpg', png_bytes(np.zeros((60, 60), np.uint8), 'JPEG')[:78], 422, 'ends inside its header'),
    ('bomb.png', bomb_png(), 413, 'pixels'),
    ('pixel.png', png_bytes(np.zeros((1, 1), np.uint8)), 422, '1 x 1 pixels is too small to show a fracture'),
    ('strip.png', png_bytes(np.zeros((31, 400), np.uint8)), 422, '400 x 31 pixels is too small'),
    ('huge.png', b'\0' * 300_000, 413, 'larger than this server accepts'),
])
def test_bad_uploads_get_a_clear_error_and_the_server_goes_on(client, xray, name, content, status, says):
    if content is None: content = xray[0][:len(xray[0]) // 2]
    r = client.post('/predict', files={'file': (name, content)})
    assert r.status_code == status and says in r.json()['error'], r.text
    assert r.json()['error'].startswith(name) or status == 413
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_decompression_bomb_is_refused_with_what_to_do(client, xray):
    "Pillow's own refusal (a header claiming over twice its limit) speaks of attacks; the server says what the sender can do"
    r = client.post('/predict', files={'file': ('bomb.png', bomb_png())})
    e = r.json()['error']
    assert r.status_code == 413 and e.startswith('bomb.png: 900,000,000 pixels is more than this server accepts (60,000,000)'), e
    assert 'downscale it' in e and 'DOS' not in e
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_multipart_body_that_cannot_be_parsed_is_named_and_logged_with_its_request(client, xray, caplog):
    import logging
    with caplog.at_level(logging.WARNING):
        r = client.post('/predict', content=b'garbage', headers={'content-type': 'multipart/form-data; boundary=xyz'})
    e = r.json()['error']
    assert r.status_code == 400 and e.startswith('POST /predict: the body is not a multipart form that can be read (Invalid multipart data: Expected boundary'), e
    assert "send the X-ray as the multipart form field 'file'" in e
    logged = [rec for rec in caplog.records if 'Expected boundary' in rec.getMessage()]  # python-multipart's bare line is not among them
    assert [rec.name for rec in logged] == ['fracture_course.deploy'] and logged[0].getMessage().startswith('400 POST /predict from '), logged
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_python_multipart_logs_as_usual_outside_the_apps_requests(client, caplog):
    "The filter that keeps python-multipart's bare parse-failure line out of the server's log drops nothing outside a request of ours"
    import logging
    with caplog.at_level(logging.WARNING):
        logging.getLogger('python_multipart.multipart').warning('a note from the parser, outside any request')
    assert [r.getMessage() for r in caplog.records if r.name == 'python_multipart.multipart'] == ['a note from the parser, outside any request']

def test_a_form_part_over_the_size_limit_is_not_called_unreadable(ckpt, xray):
    "Starlette refuses a text field over 1 MB: the form was read, so the answer passes on why instead of calling the body unreadable"
    from fastapi.testclient import TestClient
    client = TestClient(deploy.make_app(ckpt, max_upload_mb=8))
    r = client.post('/predict', files={'file': (None, b'x' * (2 * 2**20))})
    e = r.json()['error']
    assert r.status_code == 400 and 'that can be read' not in e and 'size' in e.lower() and "multipart form field 'file'" in e, e
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_form_part_without_a_file_name_is_named_as_text_not_a_file(client, xray):
    r = client.post('/predict', files={'file': ('', xray[0])})
    assert r.status_code == 422 and r.json()['error'].startswith("the form field 'file' holds text, not a file"), r.text
    r = client.post('/predict', data={'file': 'xray.png'})  # a urlencoded form: no file can be in it
    assert r.status_code == 415 and 'a body of type application/x-www-form-urlencoded' in r.json()['error'], r.text
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_dicom_claiming_more_pixels_than_the_server_takes_is_refused_before_decoding(client, xray, tmp_path):
    "Small on the wire, gigabytes decoded: the header's Rows and Columns count, as a PNG's size does; a deflated dataset is inflated in counted steps"
    import pydicom, tracemalloc
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    from fracture_course.data import write_dicom, deflated_size
    ds = pydicom.dcmread(write_dicom(np.zeros((64, 64), np.uint16), tmp_path/'x.dcm'))
    ds.Rows = ds.Columns = 8000; ds.save_as(tmp_path/'claims.dcm')  # the header claims 64 M pixels; the pixel data is 64 x 64
    ds.PixelData = np.zeros((8000, 8000), np.uint16).tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian; ds.save_as(tmp_path/'bomb.dcm', enforce_file_format=True)
    data = (tmp_path/'bomb.dcm').read_bytes(); assert len(data) < 1_000_000
    for name, content, says in [('claims.dcm', (tmp_path/'claims.dcm').read_bytes(), '8000 x 8000 pixels is more than this server accepts'),
                                ('IM0001', (tmp_path/'claims.dcm').read_bytes(), '8000 x 8000 pixels is more than this server accepts'),
                                ('bomb.dcm', data, 'a deflate-compressed DICOM whose data inflate to more than 121 MB')]:
        tracemalloc.start()
        r = client.post('/predict', files={'file': (name, content)})
        peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
        assert r.status_code == 413 and says in r.json()['error'], r.text
        assert peak < 200e6, f'{name}: {peak / 1e6:.0f} MB at the peak'  # the 128 MB of pixels are never made whole
    assert deflated_size(data, 1000) == 1001 and deflated_size((tmp_path/'claims.dcm').read_bytes(), 1000) is None
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_requests_without_a_file_or_too_large_by_header(client, xray):
    r = client.post('/predict', files={'other': ('x.png', xray[0])})
    assert r.status_code == 400 and "field 'file'" in r.json()['error']
    assert r.json()['error'].startswith("no file: the form has the field 'other', none named 'file'; send the X-ray"), r.text  # curl -F other=@x.png
    r = client.post('/predict', files={'image': ('x.png', xray[0]), 'note': (None, b'left wrist')})
    assert r.status_code == 400 and "the form has the fields 'image', 'note', none named 'file'" in r.json()['error'], r.text
    r = client.post('/predict', content=b'--b--\r\n', headers={'content-type': 'multipart/form-data; boundary=b'})  # a form with no field
    assert r.status_code == 400 and r.json()['error'].startswith('no file: the form is empty;'), r.text
    r = client.post('/predict', data={'other': 'x'})  # a form, but not one that can carry a file
    assert r.status_code == 415 and 'application/x-www-form-urlencoded' in r.json()['error'] and 'curl -F file=@' in r.json()['error']
    r = client.post('/predict', content=xray[0], headers={'content-type': 'image/png'})  # the image's bytes as the body
    assert r.status_code == 415 and "a body of type image/png; send the X-ray as the multipart form field 'file'" in r.json()['error']
    r = client.post('/predict', data={'file': 'text, not a file'})  # the field's name, but urlencoded: as any form that cannot carry a file
    assert r.status_code == 415 and 'application/x-www-form-urlencoded' in r.json()['error'] and "field 'file'" in r.json()['error']
    r = client.post('/predict?gradcam=maybe', files={'file': ('ok.png', xray[0])})
    assert r.status_code == 422 and 'gradcam' in r.json()['error'] and 'heatmap takes true or false' in r.json()['error'] and "field 'file'" not in r.json()['error']
    r = client.post('/predict', content=b'\0' * 400_000, headers={'content-type': 'application/octet-stream'})
    assert r.status_code == 413 and 'bytes' in r.json()['error']
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200

def test_a_chunked_upload_is_refused_once_it_passes_the_limit(client, xray, caplog):
    "No Content-Length to judge by: the body is counted as it arrives (a real server's case: test_a_real_server_stops_reading_a_chunked_upload)"
    import logging
    boundary = 'fracture-course-test'
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            'Content-Type: image/png\r\n\r\n').encode()
    def body():
        yield head
        for _ in range(40): yield b'\0' * 2**16  # 2.6 MB, against the fixture's limit of a few hundred kB
        yield f'\r\n--{boundary}--\r\n'.encode()
    with caplog.at_level(logging.WARNING):
        r = client.post('/predict', content=body(), headers={'content-type': f'multipart/form-data; boundary={boundary}'})
    assert not [rec.getMessage() for rec in caplog.records if rec.name.startswith(('fracture_course', 'python_multipart', 'multipart'))]  # no 400 logged for a 413 answered
    assert r.status_code == 413 and r.json()['error'].startswith('upload of more than ') and 'this server accepts up to' in r.json()['error'], r.text
    assert 'content-length' not in r.request.headers  # nothing declared: the middleware counted (TestClient hands the body over whole)
    assert r.headers['connection'] == 'close'  # the rest of the body is never read: the connection is not reused
    assert client.post('/predict', files={'file': ('ok.png', xray[0])}).status_code == 200  # and the server goes on

def test_dicom_upload(client, xray, tmp_path):
    "A DICOM upload goes through load_image like a PNG (once the data chapter reads DICOM)"
    from fracture_course import data as fd
    if not hasattr(fd, 'read_dicom'): pytest.skip('fracture_course.data.read_dicom is not there yet')
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    a = np.asarray(Image.open(io.BytesIO(xray[0])).convert('L'), np.uint16) * 16  # 12-bit
    ds = Dataset(); ds.file_meta = FileMetaDataset(); ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1'
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = 'CR', 'MONOCHROME2', 1
    ds.Rows, ds.Columns = a.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = a.astype('<u2').tobytes()
    ds.save_as(tmp_path/'x.dcm', enforce_file_format=True)
    d = client.post('/predict', files={'file': ('x.dcm', (tmp_path/'x.dcm').read_bytes())}).json()
    png = client.post('/predict', files={'file': ('x.png', xray[0])}).json()
    assert abs(d['probability'] - png['probability']) < 0.02, (d, png)  # the same pixels, give or take the 12-bit rounding

def test_an_onnx_model_serves_without_heatmaps(onnx_file, client, xray):
    from fastapi.testclient import TestClient
    oc = TestClient(make_app(onnx_file))
    d = oc.post('/predict?heatmap=true', files={'file': ('knee.png', xray[0])}).json()
    assert d['runtime'] == 'onnxruntime' and d['heatmap_png'] is None and d['heatmap'] is None
    assert d['heatmap_note'].startswith('no heat map from an exported model') and 'serve the .pt checkpoint' in d['heatmap_note']
    assert 'heatmap_note' not in oc.post('/predict', files={'file': ('knee.png', xray[0])}).json()  # not asked for: nothing to explain
    assert 'heatmap_note' not in client.post('/predict?heatmap=true', files={'file': ('knee.png', xray[0])}).json()  # a checkpoint has its map
    assert abs(d['probability'] - client.post('/predict', files={'file': ('knee.png', xray[0])}).json()['probability']) < 1e-4
    assert oc.get('/health').json()['runtime'] == 'onnxruntime'

def test_serve_arguments(ckpt):
    p = argparse.ArgumentParser(); deploy.add_serve_args(p)
    a = p.parse_args([str(ckpt)])
    assert (a.host, a.port, a.cam) == ('127.0.0.1', 8000, 'layercam')
    with pytest.raises(SystemExit): p.parse_args([str(ckpt), '--cam', 'scorecam'])
    with pytest.raises(ValueError, match="Unknown heat-map method 'scorecam'"): deploy.Predictor(ckpt, cam='scorecam')
    with pytest.raises(ValueError, match='--port'): deploy.serve_command(p.parse_args([str(ckpt), '--port', '70000']))

# --- a real server under load ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def live_server(ckpt):
    "A uvicorn server in a thread, on a free port; its base URL"
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(make_app(ckpt), host='127.0.0.1', port=free_port(), log_level='warning'))
    t = threading.Thread(target=server.run, daemon=True); t.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and t.is_alive(), 'uvicorn did not start'
        time.sleep(0.05)
    yield f'http://127.0.0.1:{server.config.port}'
    server.should_exit = True; t.join(10)

def test_200_requests_from_8_concurrent_clients(live_server, synth):
    import httpx
    files = [p.read_bytes() for p in synth[1][:4]]
    def client_run(k):
        out = []
        with httpx.Client(base_url=live_server, timeout=60) as c:
            for i in range(25):
                j = (k + i) % len(files)
                r = c.post('/predict' + ('?heatmap=true' if i % 5 == 0 else ''), files={'file': (f'{j}.png', files[j])})
                out.append((j, r.status_code, r.json()))
        return out
    with ThreadPoolExecutor(8) as ex: results = [r for rs in ex.map(client_run, range(8)) for r in rs]
    assert len(results) == 200 and all(s == 200 for _, s, _ in results)
    by_image = {}
    for j, _, d in results: by_image.setdefault(j, set()).add(d['probability'])
    assert all(len(v) == 1 for v in by_image.values()), by_image  # the same image, the same answer, whatever ran beside it
    cams = {}
    for j, _, d in results:
        if d.get('heatmap_png'): cams.setdefault(j, set()).add(d['heatmap_png'])
    assert cams and all(len(v) == 1 for v in cams.values())  # heat maps never mixed between requests


def test_truncated_uploads_are_refused_while_others_decode_beside_them(live_server, synth):
    "Uploads decode outside the model's lock, side by side: a cut file among whole ones is still refused, every time"
    import httpx
    whole = [p.read_bytes() for p in synth[1][:3]]
    cut = whole[0][:len(whole[0]) // 2]
    def client_run(k):
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return [(i % 4 == 3, c.post('/predict' + ('?heatmap=true' if i % 3 == 0 else ''),
                                         files={'file': ('x.png', cut if i % 4 == 3 else whole[i % 3])}).status_code) for i in range(12)]
    with ThreadPoolExecutor(8) as ex: results = [r for rs in ex.map(client_run, range(8)) for r in rs]
    assert all(code == (422 if is_cut else 200) for is_cut, code in results), results

def test_a_real_server_stops_reading_a_chunked_upload(live_server, caplog):
    "A chunked upload of 512 MB to a server that takes 32 MB: 413 once the limit is passed, long before the client is done; the log says no 400"
    import logging
    caplog.set_level(logging.WARNING)
    host, port = live_server.removeprefix('http://').split(':')
    boundary, MB = 'fracture-course-test', 2**20
    sock = socket.create_connection((host, int(port)), timeout=60)
    chunk = lambda b: f'{len(b):x}\r\n'.encode() + b + b'\r\n'
    sock.sendall(f'POST /predict HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n'
                 f'Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n'.encode()
                 + chunk(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'.encode()))
    sent, answered = [0], threading.Event()
    def send_until_answered():
        try:
            while sent[0] < 512 * MB and not answered.is_set(): sock.sendall(chunk(b'\0' * MB)); sent[0] += MB
        except OSError: pass  # the server closed the connection
    sender = threading.Thread(target=send_until_answered, daemon=True); sender.start()
    answer = b''
    try:
        while b'\r\n\r\n' not in answer or not answer.rstrip().endswith(b'}'):
            part = sock.recv(65536)
            if not part: break
            answer += part
    finally: answered.set(); sender.join(30); sock.close()
    assert answer.startswith(b'HTTP/1.1 413'), answer[:200]
    assert b'upload of more than' in answer and b'this server accepts up to 32 MB' in answer, answer
    assert sent[0] < 128 * MB, f'{sent[0] // MB} MB sent before the refusal'
    assert not [r.getMessage() for r in caplog.records if r.name == 'fracture_course.deploy'], 'the server logged another answer than its 413'
    import httpx
    assert httpx.get(live_server + '/health').status_code == 200  # still up

@pytest.mark.parametrize('mb', ['0', '-1', 'nan', 'inf', '1e9'])
def test_serve_refuses_an_upload_limit_that_is_no_size(mb, tmp_path):
    "--max-upload-mb must be a positive, finite number of megabytes: refused before anything is loaded or served"
    import argparse
    from fracture_course.deploy import add_serve_args, serve_command
    p = argparse.ArgumentParser(); add_serve_args(p)
    with pytest.raises(ValueError, match='--max-upload-mb must be a positive number'): serve_command(p.parse_args([str(tmp_path/'model.pt'), '--max-upload-mb', mb]))


def test_serve_on_a_port_in_use_says_so_before_serving(ckpt, capsys):
    "The port is bound before the 'Serving' line: a taken port is an error naming it, and nothing claims to serve"
    p = argparse.ArgumentParser(); deploy.add_serve_args(p)
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen(); port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f'port {port} on 127.0.0.1 is in use; choose another --port'):
            deploy.serve_command(p.parse_args([str(ckpt), '--port', str(port)]))
    assert 'Serving' not in capsys.readouterr().out
    with pytest.raises(ValueError, match='--host no-such-host.invalid: cannot be resolved'): deploy.listening_socket('no-such-host.invalid', 8000)
    try: deploy.listening_socket('192.0.2.1', 0).close()  # TEST-NET-1: nobody's address (bindable only where ip_nonlocal_bind is set)
    except ValueError as e: assert '--host must be an address of this computer' in str(e)
    try:
        with socket.socket(socket.AF_INET6) as probe: probe.bind(('::1', 0)); ipv6 = True
    except OSError: ipv6 = False  # a container without IPv6
    with deploy.listening_socket('::1' if ipv6 else '127.0.0.1', 0) as s: assert s.getsockname()[1] > 0


def test_listening_socket_tries_every_address_of_the_host(monkeypatch):
    "A name with several addresses (localhost: ::1, then 127.0.0.1) is served on the first that binds; a busy one stops the search"
    def addresses(*hosts):
        return lambda host, port, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (h, port)) for h in hosts]
    nonlocal_bind = Path('/proc/sys/net/ipv4/ip_nonlocal_bind')
    if not (nonlocal_bind.exists() and nonlocal_bind.read_text().strip() == '1'):  # else any address binds
        monkeypatch.setattr(deploy.socket, 'getaddrinfo', addresses('192.0.2.1', '127.0.0.1'))  # TEST-NET-1 is nobody's address
        with deploy.listening_socket('localhost', 0) as s: assert s.getsockname()[0] == '127.0.0.1'
    with socket.socket() as taken:  # the first address busy: refused, not served on the next one behind the other program
        taken.bind(('127.0.0.1', 0)); taken.listen(); port = taken.getsockname()[1]
        monkeypatch.setattr(deploy.socket, 'getaddrinfo', addresses('127.0.0.1', '127.0.0.2'))
        with pytest.raises(ValueError, match=f'port {port} on localhost \\(127.0.0.1\\) is in use'): deploy.listening_socket('localhost', port)


@pytest.mark.skipif(sys.platform == 'win32', reason='SIGINT to a child process is a POSIX signal')
def test_serve_stops_cleanly_on_ctrl_c(tmp_path):
    "Ctrl-C is how a person stops the server: exit status 0 and no traceback; what it logs names the request"
    import httpx, signal
    from fracture_course.learner import update_checkpoint
    ckpt = tiny_checkpoint(tmp_path/'v.pt')
    update_checkpoint(ckpt, operating_point={**OP, 'validation': VALIDATION})
    serve = ("import sys, argparse; from fracture_course.deploy import add_serve_args, serve_command; "
             "p = argparse.ArgumentParser(); add_serve_args(p); sys.exit(serve_command(p.parse_args(sys.argv[1:])))")
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-c', serve, str(ckpt), '--port', str(port)], env={**os.environ, 'PYTHONUNBUFFERED': '1'},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        bad = httpx.post(f'http://127.0.0.1:{port}/predict', content=b'garbage', headers={'content-type': 'multipart/form-data; boundary=xyz'})
        assert bad.status_code == 400 and httpx.get(f'http://127.0.0.1:{port}/health').status_code == 200  # still up
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == 0 and 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
    assert f'at http://127.0.0.1:{port}/' in out and 'on the validation split it was chosen on (319 images, 58 fractured): sensitivity 0.90' in out
    logged = [l for l in err.splitlines() if 'Expected boundary' in l]
    assert len(logged) == 1 and logged[0].startswith('400 POST /predict from 127.0.0.1: the body is not a multipart form'), err


def test_the_pixel_budget_makes_large_decodes_wait_and_frees_what_fails():
    "Decodes side by side while they fit; one past the budget waits; a decode that raises gives its pixels back"
    from fracture_course.deploy import PixelBudget
    b, seen = PixelBudget(100), []
    with b.hold(60), b.hold(40): assert b.used == 100  # both fit at once
    with pytest.raises(ValueError):
        with b.hold(10**9): assert b.used == 100; raise ValueError('a damaged file')  # more than the budget counts as all of it
    assert b.used == 0
    def later():
        with b.hold(50): seen.append(b.used)
    with b.hold(70):
        t = threading.Thread(target=later); t.start(); time.sleep(0.2)
        assert not seen  # 70 + 50 > 100: it waits
    t.join(5); assert seen == [50] and b.used == 0

def test_make_app_takes_its_pixel_limit(ckpt, xray):
    from fastapi.testclient import TestClient
    small = TestClient(deploy.make_app(ckpt, max_pixels=1000))  # the synthetic X-ray has 64 x 64 = 4,096
    r = small.post('/predict', files={'file': ('x.png', xray[0])})
    assert r.status_code == 413 and '64 x 64 pixels is more than this server accepts (1,000)' in r.json()['error'], r.text

def test_a_blank_image_is_refused_never_called_not_fractured(client, ckpt, onnx_file, xray, tmp_path, capsys):
    "An empty export, or a DICOM whose window clips every pixel, decodes fine and holds nothing: the API and predict refuse it by name"
    from fracture_course.data import write_dicom
    from fracture_course.transforms import decode_resize, grey_preset
    raw = np.asarray(Image.open(xray[1])).astype(np.uint16) * 16  # the radiograph as 12-bit stored values
    shown = write_dicom(raw, tmp_path/'shown.dcm', bits_stored=12, window=(2048, 4096), modality='CR')
    black = write_dicom(raw, tmp_path/'black.dcm', bits_stored=12, window=(5000, 100), modality='CR')  # every value under the window
    white = write_dicom(raw, tmp_path/'white.dcm', bits_stored=12, window=(-500, 10), modality='CR')   # every value over it
    assert decode_resize(black, grey_preset(64)).max() == 0 and decode_resize(white, grey_preset(64)).min() == 255
    grey = tmp_path/'grey.png'; grey.write_bytes(png_bytes(np.full((64, 64), 128, np.uint8)))
    for f in (black, white, grey):
        r = client.post('/predict', files={'file': (f.name, f.read_bytes())})
        assert r.status_code == 422 and r.json()['error'].startswith(f'{f.name}: the image is blank'), r.text
    assert client.post('/predict', files={'file': ('shown.dcm', shown.read_bytes())}).status_code == 200  # the same pixels, windowed
    for model in (ckpt, onnx_file):
        assert deploy.predict_command(predict_args([str(model), str(shown), str(black), str(grey)])) == 1
        r = capsys.readouterr()
        assert f'{black}: the image is blank' in r.err and f'{grey}: the image is blank' in r.err
        assert set(table(r.out)) == {str(shown)}

def test_a_colour_picture_is_refused_where_it_would_be_scored(client, ckpt, onnx_file, xray, tmp_path, capsys):
    "A photo of a monitor or a colour-mapped export: the API and predict (checkpoint and ONNX) refuse it by name; the same pixels saved grey as RGB are scored"
    g = np.asarray(Image.open(xray[1]).convert('L'))
    tinted, rgb = tmp_path/'tinted.png', tmp_path/'rgb.png'
    Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(tinted); Image.fromarray(np.stack([g] * 3, -1)).save(rgb)
    Image.fromarray(np.stack([g, g // 2, 255 - g], -1)).save(tmp_path/'tinted.jpg', quality=90)
    for f in (tinted, tmp_path/'tinted.jpg'):
        r = client.post('/predict', files={'file': (f.name, f.read_bytes())})
        assert r.status_code == 422 and r.json()['error'].startswith(f'{f.name}: a colour image'), r.text
    assert client.post('/predict', files={'file': ('rgb.png', rgb.read_bytes())}).status_code == 200
    assert client.get('/health').status_code == 200  # still up
    for model in (ckpt, onnx_file):
        assert deploy.predict_command(predict_args([str(model), str(rgb), str(tinted), str(tmp_path/'tinted.jpg')])) == 1
        r = capsys.readouterr()
        assert f'{tinted}: a colour image' in r.err and f"{tmp_path/'tinted.jpg'}: a colour image" in r.err and set(table(r.out)) == {str(rgb)}

def test_a_dicom_that_is_no_radiograph_is_scored_with_a_warning(client, tmp_path, capsys):
    "A CT slice decodes like any image: the API's answer and predict's output say it is not a radiograph; a CR radiograph carries no warning"
    from fracture_course.data import write_dicom
    from fracture_course.interpret import add_predict_args, predict_command
    ramp = np.arange(64 * 64).reshape(64, 64)  # any image with something in it: a blank one is refused before its modality counts
    ct = write_dicom((ramp % 400 - 200).astype(np.int16), tmp_path/'slice.dcm', modality='CT')
    cr = write_dicom(ramp.astype(np.uint16), tmp_path/'film.dcm', modality='CR')
    d = client.post('/predict', files={'file': ('slice.dcm', ct.read_bytes())}).json()
    assert d['call'] in ('fractured', 'not fractured') and d['warning'].startswith('slice.dcm: its modality is CT: a CT slice, not a radiograph')
    assert 'warning' not in client.post('/predict', files={'file': ('film.dcm', cr.read_bytes())}).json()
    p = argparse.ArgumentParser(); add_predict_args(p)
    assert predict_command(p.parse_args([str(client.app.state.predictor.path), str(ct), str(cr)])) == 0
    err = capsys.readouterr().err
    assert f'warning: {ct}: its modality is CT' in err and 'film.dcm' not in err


# --- flip TTA travels with the threshold ------------------------------------------------------------------------

def test_a_threshold_chosen_with_flip_tta_is_applied_to_flip_tta_probabilities_everywhere(synth, tmp_path, capsys):
    "train chooses the threshold on TTA probabilities when its recipe says tta: evaluate, predict, export and serve then score that way too"
    from fracture_course.learner import update_checkpoint
    from fracture_course.evaluate import evaluate_command, add_evaluate_args
    from fastapi.testclient import TestClient
    ck = tiny_checkpoint(tmp_path/'model.pt', x=load_inputs(synth[1], grey_preset(64))[0])
    update_checkpoint(ck, operating_point={**OP, 'tta': True})
    files = [str(p) for p in synth[1][:6]]
    model, _ = __import__('fracture_course.learner', fromlist=['load_checkpoint']).load_checkpoint(ck)
    x = load_inputs(files, grey_preset(64))[0]
    with_tta, without = (predict_inputs(model, x, grey_preset(64), tta=t, temperature=1.5) for t in (True, False))
    assert (with_tta - without).abs().max() > 1e-3  # the two differ on these images, so the test can tell them apart
    assert deploy.predict_command(predict_args([str(ck), *files])) == 0
    rows = table(capsys.readouterr().out)
    assert all(abs(rows[f][0] - p) < 1e-4 for f, p in zip(files, with_tta.tolist()))
    assert deploy.predict_command(predict_args([str(ck), *files, '--no-tta'])) == 0
    r = capsys.readouterr()
    assert all(abs(table(r.out)[f][0] - p) < 1e-4 for f, p in zip(files, without.tolist()))
    assert 'the saved threshold was chosen on probabilities with flip TTA; scored without flip TTA' in r.err
    onnx = export_onnx(ck, tmp_path/'model.onnx')  # the mirror image is part of the exported model
    assert (OnnxModel(onnx).predict(x) - with_tta).abs().max() < 1e-4 and OnnxModel(onnx).operating_point['tta'] is True
    with pytest.raises(ValueError, match='--no-tta: .*model.onnx averages each image with its mirror image'):
        deploy.predict_command(predict_args([str(onnx), files[0], '--no-tta']))
    for model_file in (ck, onnx):
        res = TestClient(make_app(model_file)).post('/predict', files={'file': ('x.png', Path(files[0]).read_bytes())}).json()
        assert abs(res['probability'] - with_tta[0].item()) < 1e-4 and res['tta'] is True
    p = argparse.ArgumentParser(); add_evaluate_args(p)
    data_root = synth[0].root
    assert evaluate_command(p.parse_args([str(ck), '--data', str(data_root), '--out', str(tmp_path/'e'), '--n-boot', '0'])) == 0
    assert json.loads((tmp_path/'e'/'metrics.json').read_text())['tta'] is True and 'flip TTA' in capsys.readouterr().out


def test_an_operating_point_with_a_tta_that_is_no_boolean_is_refused(tmp_path):
    from fracture_course.learner import update_checkpoint
    ck = tiny_checkpoint(tmp_path/'model.pt')
    update_checkpoint(ck, operating_point={**OP, 'tta': 'yes'})
    with pytest.raises(ValueError, match="model.pt: the saved tta is 'yes'; it must be true or false"): deploy.predict_command(predict_args([str(ck), 'x.png']))

@pytest.mark.parametrize('preset_name', ['grey', 'imagenet'])
def test_the_onnx_input_note_is_enough_to_make_the_courses_pixels(preset_name, tmp_path):
    "Followed with Pillow alone, the note stored in an exported model gives the pixels load_inputs gives, squashed or cropped"
    from fracture_course.transforms import grey_preset, imagenet_preset
    from fracture_course.deploy import onnx_input_note
    preset = grey_preset(64) if preset_name == 'grey' else imagenet_preset(64)
    a = (np.random.default_rng(1).random((200, 300)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path/'x.png')
    note, r = onnx_input_note(preset), preset.resize
    img = Image.open(tmp_path/'x.png').convert('L'); w, h = img.size
    if 'squashed' in note:
        assert f"img.resize(({r}, {r}), Image.Resampling.BILINEAR, reducing_gap=2.0)" in note and preset.squash
        mine = img.resize((r, r), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        assert 'the shorter side scaled to' in note and f'then the centre {r} x {r} crop' in note and not preset.squash
        s = r / min(w, h); mine = img.resize((max(r, int(w*s)), max(r, int(h*s))), Image.Resampling.BILINEAR)
        l, t = int(round((mine.width - r) / 2)), int(round((mine.height - r) / 2)); mine = mine.crop((l, t, l + r, t + r))
    course = load_inputs([tmp_path/'x.png'], preset)[0][0, 0].numpy()
    assert np.array_equal(np.asarray(mine), course)
