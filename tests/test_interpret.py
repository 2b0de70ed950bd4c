"Interpretation: Grad-CAM against Captum, layer choice, boxes on the network input, the pointing game, and `fracture-course predict`."
import argparse, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fracture_course.data import Item
from fracture_course.evaluate import load_inputs
from fracture_course.interpret import (CAMS, GradCAM, LayerCAM, add_predict_args, explain_layer, heatmap, pointing_by_layer, stage_sides,
                                       explain_split, boxes_on_input, cam_layer, gradcam, heatmap_peak, heatmaps,
                                       item_input_boxes, point_in_boxes, pointing_baselines, pointing_game, predict_command, image_arguments,
                                       overlay_title, write_overlays, NOTICE, show_gradcam)
from fracture_course.learner import save_checkpoint
from fracture_course.models import create_model
from fracture_course.transforms import decode_resize, eval_tfms, grey_preset, imagenet_preset

CLI = str(Path(sys.executable).parent/'fracture-course')



def bn_cnn():
    "A small CNN with batch norm, in-place ReLUs and global average pooling (a different shape of network)"
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2)).eval()


# --- Grad-CAM -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['simple_cnn', 'bn_cnn'])
@pytest.mark.parametrize('target', [1, 0, 'per-image'])
def test_gradcam_agrees_with_captum(which, target):
    from captum.attr import LayerAttribution, LayerGradCam
    if which == 'simple_cnn':
        torch.manual_seed(0)
        model, layer, x = create_model('simple_cnn', img_size=32, widths=(8, 16)).eval(), None, torch.randn(5, 1, 32, 32)
        layer = model.body[1]
    else:
        model = bn_cnn(); layer = model[4]; x = torch.randn(5, 3, 24, 24)
    tgt = torch.tensor([0, 1, 1, 0, 1]) if target == 'per-image' else target
    with GradCAM(model, layer) as gc: ours = gc(x, tgt)
    ref = LayerGradCam(model, layer).attribute(x, target=tgt, relu_attributions=True)
    assert ref.shape == (5, 1, *ours.shape[-2:])
    assert torch.allclose(ours, ref[:, 0], atol=1e-5)
    assert ours.abs().max() > 1e-4  # not a trivial all-zero agreement
    with GradCAM(model, layer) as gc: raw = gc(x, tgt, relu=False)
    assert torch.allclose(raw, LayerGradCam(model, layer).attribute(x, target=tgt)[:, 0], atol=1e-5)
    # after the same upsampling, too
    up = LayerAttribution.interpolate(ref, x.shape[-2:], interpolate_mode='bilinear')[:, 0]
    top = up.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    assert torch.allclose(heatmaps(ours, x.shape[-2:]), (up / top).clamp(min=0), atol=1e-5)


@pytest.mark.parametrize('which', ['simple_cnn', 'bn_cnn'])
def test_layercam_agrees_with_captum_gradients_and_activations(which):
    "LayerCAM = sum_c ReLU(dy/dA_c) * A_c, with Captum taking the layer's gradients and activations"
    from captum.attr import LayerActivation, LayerGradientXActivation
    if which == 'simple_cnn':
        torch.manual_seed(0)
        model = create_model('simple_cnn', img_size=32, widths=(8, 16)).eval(); layer, x = model.body[0], torch.randn(5, 1, 32, 32)
    else:
        model = bn_cnn(); layer = model[2]; x = torch.randn(5, 3, 24, 24)
    tgt = torch.tensor([0, 1, 1, 0, 1])
    with LayerCAM(model, layer) as lc: ours = lc(x, tgt)
    G = LayerGradientXActivation(model, layer, multiply_by_inputs=False).attribute(x, target=tgt)  # dy/dA
    A = LayerActivation(model, layer).attribute(x)
    assert torch.allclose(ours, (F.relu(G) * A).sum(1), atol=1e-5) and ours.abs().max() > 1e-4
    with GradCAM(model, layer) as gc: gcam = gc(x, tgt)
    assert not torch.allclose(ours / ours.amax((1, 2), keepdim=True), gcam / gcam.amax((1, 2), keepdim=True).clamp(min=1e-12), atol=1e-3)  # a different map


def test_explain_split_takes_a_cam_class():
    torch.manual_seed(0)
    model = create_model('simple_cnn', img_size=32, widths=(8, 16)).eval()
    items = [Item(Path(f'x{i}.png'), 1) for i in range(3)]  # no boxes: no file is opened
    x = torch.randn(3, 1, 32, 32); dl = [(x, torch.ones(3, dtype=torch.long))]
    preset = grey_preset(32)
    for cam in (GradCAM, LayerCAM):
        heat, boxes, inputs = explain_split(model, dl, items, preset, model.body[0], cam=cam)
        with cam(model, model.body[0]) as c: ref = heatmaps(c(x), 32)
        assert heat.shape == (3, 32, 32) and torch.allclose(heat, ref) and torch.equal(inputs, x) and all(len(b) == 0 for b in boxes)


def test_gradcam_removes_its_hook_restores_mode_and_works_frozen():
    model = bn_cnn().train()
    for p in model.parameters(): p.requires_grad_(False)
    x = torch.randn(2, 3, 24, 24)
    with GradCAM(model, model[4]) as gc: cam = gc(x)
    assert cam.shape == (2, 12, 12) and (cam >= 0).all() and model.training
    assert len(model[4]._forward_hooks) == 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match='feature map'):
        with GradCAM(model, model[-1]) as gc: gc(x)


def test_gradcam_bad_inputs_say_what_to_do_and_leave_the_model_working():
    "Each mistake raises a ValueError that names it; no hook is left behind, so the model (and a later Grad-CAM) still runs"
    model, x = bn_cnn(), torch.randn(2, 3, 16, 16)
    def still_works():
        assert model(x).shape == (2, 2) and not any(m._forward_hooks for m in model.modules())
        with torch.no_grad(): model(x)
        assert gradcam(model, x, model[4]).shape == (2, 16, 16)
    gc = GradCAM(model, model[-1])  # a Linear, used without `with`: its hook goes before the error is raised
    with pytest.raises(ValueError, match=r'feature map \[B, C, h, w\]; Linear returned \(2, 2\)'): gc(x)
    still_works()
    GradCAM(model, model[8])  # a Flatten, hooked and never called: the next plain forward pass says so, once, and unhooks it
    with pytest.raises(ValueError, match='feature map'): model(x)
    still_works()
    with pytest.raises(ValueError, match='not a module of this Sequential.*or its name'): gradcam(model, x, nn.Conv2d(8, 16, 3))
    with pytest.raises(ValueError, match="has no layer named 'body.1'.*named_modules"): heatmap(model, x, layer='body.1')
    with pytest.raises(ValueError, match='target 2 is not a class of this model: it has 2 outputs'): gradcam(model, x, model[4], target=2)
    with pytest.raises(ValueError, match='target -1 is not a class'): heatmap(model, x, 'gradcam', model[4], target=-1)
    with pytest.raises(ValueError, match='one per image'): gradcam(model, x, model[4], target=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r'float inputs, got torch.uint8.*eval_tfms\(preset\)\(x\)'): heatmap(model, (x * 40 + 100).clamp(0, 255).byte(), layer=model[4])
    with pytest.raises(ValueError, match=r'batch of model inputs \[B, C, H, W\].*x\[None\]'): gradcam(model, x[0], model[4])
    for f in (gradcam, heatmap):  # without a layer too: the input is checked before its shape picks one
        with pytest.raises(ValueError, match=r'batch of model inputs \[B, C, H, W\].*x\[None\]'): f(model, x[0])
    still_works()
    m = create_model('simple_cnn', img_size=64, widths=(8, 16, 32)).eval(); x64 = torch.randn(2, 1, 64, 64)
    assert torch.allclose(heatmap(m, x64, layer='body.1'), heatmap(m, x64, layer=m.body[1]))  # a dotted name is the module it names
    assert torch.allclose(gradcam(m, x64, 'body.2'), gradcam(m, x64))
    gc = GradCAM(m, 'body.1'); gc.remove(); gc.remove()  # removing twice is harmless
    with pytest.raises(ValueError, match='the hook was removed'): gc(x64)


def test_cam_layer_and_gradcam_heatmaps():
    model = create_model('simple_cnn', img_size=64, widths=(8, 16, 32)).eval()
    name, layer = cam_layer(model, 64)
    assert name == 'body.2' and layer is model.body[2]  # 8 x 8 maps: the last stage with side >= 64/16
    h = gradcam(model, torch.randn(3, 1, 64, 64))
    assert h.shape == (3, 64, 64) and h.min() >= 0 and h.max() <= 1 + 1e-6
    assert torch.allclose(h.flatten(1).max(1).values[h.flatten(1).max(1).values > 0], torch.tensor(1.0))
    with pytest.raises(ValueError, match='No stage'): cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), 4, 1)


def test_explain_layer_heatmap_and_their_methods():
    model = create_model('simple_cnn', img_size=64, widths=(8, 16, 32)).eval()
    assert stage_sides(model, 64) == {'body.0': 32, 'body.1': 16, 'body.2': 8}
    assert explain_layer(model, 64)[0] == 'body.1' and explain_layer(model, 64, method='gradcam')[0] == 'body.2'  # 64/4 and 64/16
    assert cam_layer(model, 64, fraction=1/2)[0] == 'body.0'
    inc = create_model('inception', in_channels=1, stem_channels=8, branch_channels=(4, 4, 4, 4)).eval()
    for size in (64, 224):  # the rule's layer at the quick and the full profile's size (the pointing game measured it at 64 px)
        assert explain_layer(inc, size)[0] == 'block2' and stage_sides(inc, size)['block2'] == size // 4
    x = torch.randn(3, 1, 64, 64)
    with LayerCAM(model, model.body[1]) as lc: want = lc(x)
    h = heatmap(model, x)
    assert h.shape == (3, 64, 64) and torch.allclose(h, heatmaps(want, 64), atol=1e-6)  # LayerCAM at body.1 by default
    assert torch.allclose(heatmap(model, x, 'gradcam'), gradcam(model, x), atol=1e-6)
    with pytest.raises(ValueError, match="Unknown heat-map method 'scorecam'.*layercam, gradcam"): heatmap(model, x, 'scorecam')
    with pytest.raises(ValueError, match='Unknown heat-map method'): heatmap(model, x, 'scorecam', model.body[1])
    with pytest.raises(ValueError, match='Unknown heat-map method'): explain_layer(model, 64, method='GradCAM')
    flat = nn.Sequential(nn.Conv2d(1, 4, 3, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))  # an 8 x 8 map at 64 px
    with pytest.raises(ValueError, match="side >= 16.*method 'gradcam', `--cam gradcam`"): explain_layer(flat, 64)
    assert explain_layer(flat, 64, method='gradcam')[0] == '1'
    assert set(CAMS) == {'layercam', 'gradcam'}


def test_pointing_by_layer_rows_and_a_map_that_points():
    "One row per map side, coarsest last; a CAM that peaks on a planted bright square hits it, the baselines are the module's"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d): m.weight.fill_(0.1); m.bias.zero_()
        model[-1].weight.copy_(torch.tensor([[-1.] * 4, [1.] * 4])); model[-1].bias.zero_()
    x, boxes = torch.zeros(6, 1, 32, 32), []
    for k in range(6):
        r, c = 4 + 4 * k, 24 - 4 * k
        x[k, 0, r:r + 4, c:c + 4] = 1.0; boxes.append([[c, r, c + 4, r + 4]])
    rows = pointing_by_layer(model, x, boxes)
    assert [r['layer'] for r in rows] == ['1', '4', '5'] and [r['map side'] for r in rows] == [32, 16, 8]  # the last stage of each side
    assert [r['tolerance px'] for r in rows] == [0.5, 1.0, 2.0]
    assert all(r['LayerCAM'] == r['Grad-CAM'] == 1.0 for r in rows)  # both find the one bright square at every depth
    assert rows[1]['random'] == pytest.approx(pointing_baselines(boxes, 32, 1.0)['random']) and rows[0]['centre'] == pytest.approx(2 / 6)
    assert set(rows[0]) == {'layer', 'map side', 'tolerance px', 'centre', 'random', 'Grad-CAM', 'LayerCAM'}


# --- boxes and the pointing game ------------------------------------------------------------------------------------

def test_boxes_follow_the_image_through_the_preset(tmp_path):
    "A bright rectangle drawn in the original image lands where the mapped box says, for squash and crop presets"
    a = np.zeros((90, 150), np.uint8); box = [60, 30, 96, 54]; a[30:54, 60:96] = 255
    Image.fromarray(a).save(tmp_path/'x.png')
    for preset in (grey_preset(48), imagenet_preset(64)):
        x = eval_tfms(preset)(decode_resize(tmp_path/'x.png', preset))[0]
        bright = (x > x.mean() + x.std()).nonzero()
        b = boxes_on_input([box], (150, 90), preset)[0]
        ys, xs = bright[:, 0].float() + 0.5, bright[:, 1].float() + 0.5
        assert xs.min() >= b[0] - 1.5 and xs.max() <= b[2] + 1.5 and ys.min() >= b[1] - 1.5 and ys.max() <= b[3] + 1.5, (preset.name, b)
        assert xs.max() - xs.min() > 0.8 * (b[2] - b[0]) - 2  # and fills it
    it = Item(tmp_path/'x.png', 1, 'test', {'boxes_norm': [[0.4, 30 / 90, 0.64, 54 / 90]]})  # FracAtlas-style, normalised
    assert torch.allclose(item_input_boxes(it, grey_preset(48)), boxes_on_input([box], (150, 90), grey_preset(48)), atol=1e-4)
    assert item_input_boxes(Item(tmp_path/'x.png', 0), grey_preset(48)).shape == (0, 4)


def test_pointing_game_on_a_toy_with_a_known_answer():
    heat = torch.zeros(4, 10, 10)
    heat[0, 2, 3] = 1; heat[1, 8, 8] = 1; heat[2, 5, 5] = 1; heat[3, 0, 0] = 1
    assert heatmap_peak(heat)[:2].tolist() == [[3.5, 2.5], [8.5, 8.5]]
    boxes = [[[2, 1, 5, 4]], [[0, 0, 4, 4]], [], [[1, 1, 3, 3], [0, 0, 0.4, 0.4]]]
    r = pointing_game(heat, boxes)
    assert r['hit'] == [True, False, None, False] and (r['hits'], r['images']) == (1, 3) and r['rate'] == pytest.approx(1 / 3)
    r = pointing_game(heat, boxes, tolerance=0.2)  # image 3's peak (0.5, 0.5) is within 0.2 of the small box
    assert r['hit'] == [True, False, None, True]
    assert point_in_boxes((4, 4), [[0, 0, 4, 4]]) and not point_in_boxes((4.1, 4), [[0, 0, 4, 4]])
    with pytest.raises(ValueError, match='heat maps'): pointing_game(heat, boxes[:2])
    base = pointing_baselines([[[0, 0, 5, 10]], [[4, 4, 6, 6]]], 10)
    assert base['centre'] == 1.0 and base['random'] == pytest.approx((0.5 + 0.04) / 2)


def test_show_gradcam_draws_fracture_boxes_and_other_marks_in_their_own_colours():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    ax = show_gradcam(np.zeros((8, 8)), torch.rand(8, 8), [[1, 1, 3, 3]], marks=[[5, 5, 7, 7], [0, 5, 2, 7]])
    assert [p.get_edgecolor() for p in ax.patches] == [to_rgba('yellow')] + [to_rgba('magenta')] * 2
    plt.close(ax.figure)


def test_no_boxes_means_no_rate_for_the_method_nor_its_baselines():
    "Nothing to point at: the centre's rate is NaN like the random peak's and the method's own, never a 0.0 that reads as a result"
    for boxes in ([], [[], []]):
        base = pointing_baselines(boxes, 10)
        assert np.isnan(base['centre']) and np.isnan(base['random'])
    assert np.isnan(pointing_game(torch.zeros(2, 10, 10), [[], []])['rate'])
    assert pointing_baselines([[], [[0, 0, 10, 10]]], 10) == {'centre': 1.0, 'random': 1.0}  # images without boxes are not counted


# --- the command ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('pred')
    rng = np.random.default_rng(0)
    for i in range(3): Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(root/f'img{i}.png')
    Image.fromarray(np.repeat(rng.integers(0, 255, (40, 50, 1), dtype=np.uint8), 3, -1)).save(root/'colour.jpg')  # a grey picture saved as an RGB JPEG: scored (a truly colour one is refused: test_data, test_deploy)
    (root/'bad.png').write_bytes(b'\x89PNG\r\n\x1a\nbroken')
    torch.manual_seed(0)
    model = create_model('simple_cnn', img_size=32, widths=(4, 8), hidden=8)
    save_checkpoint(root/'model.pt', model, preprocessing=grey_preset(32).to_dict(), metrics={'threshold': 0.37})
    return root


def run_predict(argv):
    p = argparse.ArgumentParser(); add_predict_args(p)
    return predict_command(p.parse_args([str(a) for a in argv]))

def table_rows(out:str) -> list:
    "predict's table as [probability, call, image] rows: the '#' lines (header, notice) and the column names left out"
    return [l.split('\t') for l in out.splitlines() if l and not l.startswith(('#', 'probability\t'))]


def test_predict_prints_probabilities_and_calls(tiny, capsys):
    files = [tiny/'img0.png', tiny/'img1.png', tiny/'colour.jpg']
    assert run_predict([tiny/'model.pt', *files, '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'threshold 0.3700 (saved in the checkpoint)' in out
    assert out.splitlines()[1] == f'# {NOTICE}' and out.count('Not for clinical use') == 1  # once, as a comment under the header
    rows = [l.split('\t') for l in out.splitlines() if l.endswith(('.png', '.jpg'))]
    assert [r[2] for r in rows] == [str(f) for f in files]
    from fracture_course.learner import load_checkpoint
    from fracture_course.evaluate import predict_inputs
    model, _ = load_checkpoint(tiny/'model.pt')
    x, _, _ = load_inputs(files, grey_preset(32))
    probs = predict_inputs(model, x, grey_preset(32))
    for r, p in zip(rows, probs.tolist()):
        assert float(r[0]) == pytest.approx(p, abs=1e-4) and r[1] == ('fractured' if p > 0.37 else 'not fractured')
    assert run_predict([tiny/'model.pt', files[0], '--threshold', '0']) == 0
    assert '\tfractured\t' in capsys.readouterr().out


def test_predict_a_folder_scores_the_images_below_it_and_names_the_rest(tiny, tmp_path, capsys):
    "A folder stands for its image files (sub-folders included, sorted); other files are named on stderr, never scored nor dropped silently"
    import shutil
    (tmp_path/'b'/'sub').mkdir(parents=True)
    shutil.copy(tiny/'img0.png', tmp_path/'b'/'z.png'); shutil.copy(tiny/'img1.png', tmp_path/'b'/'sub'/'a.png')
    from fracture_course.data import write_dicom
    write_dicom(np.asarray(Image.open(tiny/'img2.png'), np.uint16) * 16, tmp_path/'b'/'IM0001')  # a DICOM named without a suffix is taken
    (tmp_path/'b'/'manifest.csv').write_text('path,label\n'); (tmp_path/'b'/'.hidden.png').write_bytes(b'x')
    assert run_predict([tiny/'model.pt', tmp_path/'b', tiny/'colour.jpg', '--device', 'cpu']) == 0
    out, err = capsys.readouterr()
    rows = table_rows(out)
    assert [r[2] for r in rows] == [str(tmp_path/'b'/'IM0001'), str(tmp_path/'b'/'sub'/'a.png'), str(tmp_path/'b'/'z.png'), str(tiny/'colour.jpg')]
    assert f"note: {tmp_path/'b'}: 1 file(s) not taken for images by their names (manifest.csv)" in err and '.hidden' not in out + err
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='is a folder with no image file below it'): run_predict([tiny/'model.pt', tmp_path/'empty'])

def test_the_printed_threshold_has_the_probabilities_decimals(tiny, capsys):
    "With 0.4455 printed for both, a call can never read as the opposite of what the two printed numbers say"
    assert run_predict([tiny/'model.pt', tiny/'img0.png', '--threshold', '0.44552', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'threshold 0.4455 (--threshold)' in out and 'flip TTA' not in out.splitlines()[0]

def test_predict_heatmap_overlays_and_bad_images(tiny, tmp_path, capsys):
    rc = run_predict([tiny/'model.pt', tiny/'img0.png', tiny/'bad.png', tmp_path/'missing.png', tiny/'img1.png', '--heatmaps', tmp_path/'cams'])
    assert rc == 1
    cap = capsys.readouterr()
    assert 'img0.png' in cap.out and 'img1.png' in cap.out and 'bad.png' not in cap.out
    assert 'error: ' + str(tiny/'bad.png') in cap.err and 'missing.png' in cap.err and '2 of 4' in cap.err
    pngs = sorted(p.name for p in (tmp_path/'cams').glob('*.png'))
    assert pngs == ['img0_layercam.png', 'img1_layercam.png'] and all((tmp_path/'cams'/p).stat().st_size > 2000 for p in pngs)
    assert 'LayerCAM overlays' in cap.out
    assert run_predict([tiny/'model.pt', tiny/'img0.png', '--gradcam', tmp_path/'old']) == 0  # the option from before --heatmaps: Grad-CAM, as then
    assert [p.name for p in (tmp_path/'old').glob('*.png')] == ['img0_gradcam.png'] and 'Grad-CAM overlays' in capsys.readouterr().out
    assert run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'gc', '--cam', 'gradcam']) == 0
    assert [p.name for p in (tmp_path/'gc').glob('*.png')] == ['img0_gradcam.png']
    with pytest.raises(ValueError, match='not both'): run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'a', '--gradcam', tmp_path/'b'])
    with pytest.raises(SystemExit): run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'x', '--cam', 'scorecam'])


def test_overlay_title_states_the_call_at_the_threshold():
    assert overlay_title(0.064) == 'P(fracture) 0.064'
    assert overlay_title(0.064, 0.062) == 'fractured: P 0.064 > threshold 0.062'
    assert overlay_title(0.041, 0.062) == 'not fractured: P 0.041 <= threshold 0.062'
    assert overlay_title(0.062, 0.062) == 'not fractured: P 0.062 <= threshold 0.062'  # equal: not above, as report_predictions calls; equal numbers may look equal
    assert overlay_title(0.0621, 0.06209) == 'fractured: P 0.06210 > threshold 0.06209'  # more decimals until the two differ
    assert overlay_title(0.9, 0.5, ('ok', 'break')) == 'break: P 0.900 > threshold 0.500'


def overlay_titles(monkeypatch):
    "Collect the titles write_overlays gives its PNGs, {file name: title}, the PNGs still written"
    import fracture_course.interpret as interpret
    titles, draw = {}, interpret._overlay_png
    def keep(path, x, heat, preset, title): titles[Path(path).name] = title; draw(path, x, heat, preset, title)
    monkeypatch.setattr(interpret, '_overlay_png', keep)
    return titles


def test_write_overlays_titles_with_and_without_a_threshold(tiny, tmp_path, monkeypatch):
    titles = overlay_titles(monkeypatch)
    model, preset, files = create_model('simple_cnn', img_size=32, widths=(4, 8), hidden=8), grey_preset(32), [tiny/'img0.png', tiny/'img1.png']
    x, ok, _ = load_inputs(files, preset)
    probs = torch.tensor([0.064, 0.041])
    write_overlays(model, x, files, ok, probs, preset, 'layercam', tmp_path/'a')
    assert titles == {'img0_layercam.png': 'P(fracture) 0.064', 'img1_layercam.png': 'P(fracture) 0.041'}  # the default keeps the old title
    titles.clear()
    write_overlays(model, x, files, ok, probs, preset, 'layercam', tmp_path/'b', threshold=0.062)
    assert titles == {'img0_layercam.png': 'fractured: P 0.064 > threshold 0.062', 'img1_layercam.png': 'not fractured: P 0.041 <= threshold 0.062'}
    assert sorted(p.name for p in (tmp_path/'b').glob('*.png')) == ['img0_layercam.png', 'img1_layercam.png']


def test_predict_overlays_state_the_call_at_the_threshold_it_printed(tiny, tmp_path, monkeypatch, capsys):
    titles = overlay_titles(monkeypatch)
    assert run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'s', '--device', 'cpu']) == 0
    p, call = table_rows(capsys.readouterr().out)[0][:2]
    assert titles['img0_layercam.png'].startswith(f'{call}: P ') and 'threshold 0.370' in titles['img0_layercam.png']  # the checkpoint's
    assert run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'t', '--threshold', '0']) == 0
    assert titles['img0_layercam.png'].startswith('fractured: P ') and titles['img0_layercam.png'].endswith('> threshold 0.000')


def test_predict_refuses_overlays_where_they_would_be_read_as_radiographs(tiny, tmp_path):
    "Into the scored images' folder, or inside a dataset's class folder: refused before anything is loaded; elsewhere (even under a folder named 'fracture'): written"
    import shutil
    ds = tmp_path/'ds'; (ds/'test'/'not fractured').mkdir(parents=True); (ds/'test'/'Fractured').mkdir()
    img = ds/'test'/'Fractured'/'img0.png'; shutil.copy(tiny/'img0.png', img)
    for out, says in [(ds/'test'/'Fractured', 'holds the images being scored'), (ds/'test'/'Fractured'/'cams', 'inside the dataset class folder'),
                      (ds/'test'/'not fractured', 'inside the dataset class folder')]:
        with pytest.raises(ValueError, match=f'--heatmaps {out}: it {"is" if "inside" in says else ""}.*{says}'):
            run_predict([tiny/'model.pt', img, '--heatmaps', out, '--device', 'nope'])  # refused before the device is looked at
        assert not (ds/'test'/'Fractured'/'cams').exists()
    with pytest.raises(ValueError, match='--gradcam .*holds the images'): run_predict([tiny/'model.pt', img, '--gradcam', img.parent])
    assert run_predict([tiny/'model.pt', img, '--heatmaps', tmp_path/'fracture'/'cams']) == 0  # a folder named like a class, no dataset
    (tmp_path/'runs'/'0').mkdir(parents=True)  # run folders named 0 and 1 ('0' and '1' are class names in a CSV): no images, no dataset
    assert run_predict([tiny/'model.pt', img, '--heatmaps', tmp_path/'runs'/'1'/'heatmaps']) == 0
    assert [p.name for p in (tmp_path/'fracture'/'cams').glob('*.png')] == ['img0_layercam.png']
    assert sorted(p.name for p in ds.rglob('*.png')) == ['img0.png']


def test_predict_never_overwrites_one_overlay_with_another(tiny, tmp_path):
    "img_2.png beside two img.png from other folders: three images scored, three overlays written (a fallback name once replaced one)"
    import shutil
    for f in ('y/img_2.png', 'y/a/img.png', 'y/b/img.png'):
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy(tiny/'img0.png', tmp_path/f)
    assert run_predict([tiny/'model.pt', tmp_path/'y/img_2.png', tmp_path/'y/a/img.png', tmp_path/'y/b/img.png', '--heatmaps', tmp_path/'hm']) == 0
    assert sorted(p.name for p in (tmp_path/'hm').glob('*.png')) == ['img_2_layercam.png', 'img_3_layercam.png', 'img_layercam.png']


def test_predict_bad_arguments(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): run_predict([tmp_path/'none.pt', tiny/'img0.png'])
    (tmp_path/'junk.pt').write_bytes(b'\x00' * 10)
    with pytest.raises(ValueError, match='could not be read as a checkpoint'): run_predict([tmp_path/'junk.pt', tiny/'img0.png'])
    with pytest.raises(ValueError, match='--threshold'): run_predict([tiny/'model.pt', tiny/'img0.png', '--threshold', '-1'])
    with pytest.raises(SystemExit): run_predict([tiny/'model.pt'])  # no image: argparse refuses


def test_cli_predict_when_wired(tiny, tmp_path):
    from fracture_course.cli import build_parser
    if 'predict' not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip('fracture-course predict is not wired into the CLI yet')
    r = subprocess.run([CLI, 'predict', str(tiny/'model.pt'), str(tiny/'img0.png'), str(tiny/'bad.png')], capture_output=True, text=True)
    assert r.returncode == 1 and 'img0.png' in r.stdout and 'bad.png' in r.stderr
    r = subprocess.run([CLI, 'predict', str(tmp_path/'missing.pt'), str(tiny/'img0.png')], capture_output=True, text=True)
    assert r.returncode == 1 and 'missing.pt' in r.stderr


def test_predict_checks_the_heatmap_folder_before_scoring(tiny, tmp_path, capsys):
    "--heatmaps into a file: refused with the option named, before any image is scored (no probabilities printed)"
    (tmp_path/'afile').write_text('x')
    with pytest.raises(ValueError, match='--heatmaps .*choose another --heatmaps'):
        run_predict([tiny/'model.pt', tiny/'img0.png', '--heatmaps', tmp_path/'afile'])
    assert 'img0.png' not in capsys.readouterr().out


def test_predict_refuses_a_truncated_file_as_the_server_does(tiny, tmp_path, capsys):
    "A file that decodes only partly gets no score (a score on the top of an X-ray is not one on the X-ray); training still reads it"
    from fracture_course.data import DamagedImageWarning, load_image
    Image.open(tiny/'img0.png').convert('L').resize((200, 160)).save(tmp_path/'whole.jpg', quality=95)
    data = (tmp_path/'whole.jpg').read_bytes(); (tmp_path/'cut.jpg').write_bytes(data[:len(data) * 2 // 3])
    with pytest.warns(DamagedImageWarning, match='cut.jpg'): assert load_image(tmp_path/'cut.jpg').size == (200, 160)
    assert run_predict([tiny/'model.pt', tmp_path/'whole.jpg', tmp_path/'cut.jpg']) == 1
    cap = capsys.readouterr()
    assert 'whole.jpg' in cap.out and 'cut.jpg' not in cap.out
    assert f"error: {tmp_path/'cut.jpg'}: the file is truncated" in cap.err and '1 of 2' in cap.err


def test_predict_says_when_no_image_was_scored(tiny, tmp_path, capsys):
    assert run_predict([tiny/'model.pt', tmp_path/'missing.png', tiny/'bad.png']) == 1
    err = capsys.readouterr().err
    assert '2 of 2 image(s) could not be read (listed above); none was scored.' in err and 'the others' not in err


def test_predict_writes_a_csv_row_per_image_unreadable_ones_included(tiny, tmp_path, capsys):
    "For a pipeline: every image asked for has a row, in the order asked, and the probabilities are the printed ones"
    import csv
    files = [tiny/'img0.png', tiny/'bad.png', tiny/'img1.png']
    assert run_predict([tiny/'model.pt', *files, '--device', 'cpu', '--csv', tmp_path/'p.csv']) == 1
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path/'p.csv')))
    assert [r['image'] for r in rows] == [str(f) for f in files] and [r['call'] for r in rows][1] == 'unreadable'
    assert rows[1]['probability'] == '' and rows[1]['note'] and float(rows[0]['threshold']) == 0.37
    assert list(rows[0])[:5] == ['image', 'probability', 'call', 'threshold', 'note'] and all(r['notice'] == NOTICE for r in rows)  # a last column
    assert NOTICE == ("Not for clinical use. A teaching model from the fracture_course course: it has not been validated on "
                      "patients and must not be used to diagnose or treat anyone.") and f'# {NOTICE}' in out
    printed = {r[2]: float(r[0]) for r in table_rows(out)}
    assert all(abs(float(r['probability']) - printed[r['image']]) < 1e-4 for r in rows if r['probability'])


def test_folder_arguments_dicom_names_duplicates_and_overlays_inside_them(tiny, tmp_path, capsys, monkeypatch):
    "A DICOM named by its UID is taken and DICOMDIR is not; an image given twice is scored once; overlays may not go inside a folder given to be scored"
    import shutil, csv
    from fracture_course.data import write_dicom
    d = tmp_path/'cd'; d.mkdir()
    write_dicom(np.asarray(Image.open(tiny/'img0.png'), np.uint16) * 16, d/'1.2.840.113619.2.55.1')
    (d/'IM0009').write_bytes((d/'1.2.840.113619.2.55.1').read_bytes()[132:])  # the same without its preamble, as archives write them
    (d/'DICOMDIR').write_bytes(b'\0' * 128 + b'DICM'); (d/'README').write_text('a CD')
    shutil.copy(tiny/'img1.png', d/'b.png')
    (tmp_path/'elsewhere').mkdir(); shutil.copy(tiny/'img2.png', tmp_path/'elsewhere'/'c.png')
    (d/'linked').symlink_to(tmp_path/'elsewhere'); (d/'gone.png').symlink_to(tmp_path/'nothing.png')
    found = image_arguments([d, d/'b.png', str(d) + '/'])
    assert [Path(p).name for p in found] == ['1.2.840.113619.2.55.1', 'IM0009', 'b.png', 'c.png']  # a linked folder is followed
    err = capsys.readouterr().err
    assert 'DICOMDIR' in err and 'gone.png: a link to a file that does not exist' in err
    with pytest.raises(ValueError, match='inside the folder .* given to be scored'):
        run_predict([tiny/'model.pt', d, '--heatmaps', d/'overlays'])
    monkeypatch.chdir(tiny)  # './bad.png' is reported as 'bad.png': its row still comes first, where it was asked for
    assert run_predict([tiny/'model.pt', './bad.png', 'img0.png', './img0.png', '--csv', tmp_path/'p.csv', '--device', 'cpu']) == 1
    rows = list(csv.DictReader(open(tmp_path/'p.csv')))
    assert [(r['image'], r['call'] == 'unreadable') for r in rows] == [('./bad.png', True), ('img0.png', False)]  # img0.png given twice, scored once
    with pytest.raises(ValueError, match='--csv .*: its folder does not exist'): run_predict([tiny/'model.pt', tiny/'img0.png', '--csv', tmp_path/'no'/'p.csv'])

def test_predict_says_what_is_wrong_with_swapped_arguments_and_a_lone_cam(tiny):
    with pytest.raises(ValueError, match=r'img0.png is an image: the model comes first .*fracture-course predict best.pt .*img0.png'):
        run_predict([tiny/'img0.png', tiny/'model.pt'])
    with pytest.raises(ValueError, match='--cam gradcam chooses the method of the overlays; give --heatmaps DIR too'):
        run_predict([tiny/'model.pt', tiny/'img0.png', '--cam', 'gradcam'])

def test_overlay_titles_never_show_two_equal_looking_numbers_that_decide_a_call():
    from fracture_course.interpret import overlay_title
    thr = 0.0620002635
    above, below = overlay_title(0.06200041, thr), overlay_title(0.06200012, thr)
    assert above.startswith('fractured: P ') and below.startswith('not fractured: P ')
    for t in (above, below):
        p, q = t.split('P ')[1].split(' ')[0], t.split('threshold ')[1]
        assert p != q, t
