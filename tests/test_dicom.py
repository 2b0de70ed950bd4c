"""DICOM input: pydicom's radiographs and refusals, DICOMs written from FracAtlas and synthetic images reaching the model as
the PNG would, the audit, `predict` and `evaluate` on .dcm files, and patient tags that never appear in any output."""
import argparse, json, logging, re, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import JPEGLSLossless

from fracture_course.data import (IMAGE_EXTS, UnreadableImage, audit, add_audit_args, audit_command, dicom_summary, is_dicom,
                                  load_dataset, load_image, read_dicom, write_dicom)
from fracture_course.transforms import ImageCache, decode_resize, grey_preset, imagenet_preset

PHI = ('Doe', 'Jane', 'ID-778899', '19700101')  # patient name, ID and birth date written into some test files
PATIENT = dict(PatientName='Doe^Jane', PatientID='ID-778899', PatientBirthDate='19700101')


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch): monkeypatch.setenv('FRACTURE_CACHE_DIR', str(tmp_path/'cache'))


def bundled(name):
    "A file of pydicom's test data, or a skip when it is not installed (RG* files come with the pydicom-data package)"
    p = get_testdata_file(name, download=False)
    if p is None: pytest.skip(f'{name} is not installed (pip install pydicom-data)')
    return p


def synthetic_image(seed=0, size=96):
    from fracture_course.synthetic import SynthSettings, make_case, render_case
    return render_case(make_case(SynthSettings(size=size, seed=seed), 0, 1))


def exact_window(lo, hi):
    "The (centre, width) that pydicom's LINEAR window maps exactly onto lo..hi"
    return (lo + hi) / 2 + 0.5, hi - lo + 1


# (name, stored values and write_dicom arguments for an 8-bit image `a`, what the DICOM must read as)
# 'png': the 8-bit image itself; 'png16': a 16-bit PNG of the stored values (both stretched to their own range)
VARIANTS = {
    'MONOCHROME2 8-bit': lambda a: (a, {}, 'png'),
    'MONOCHROME1 8-bit': lambda a: (255 - a, dict(photometric='MONOCHROME1'), 'png'),
    '12-bit, rescale': lambda a: (a.astype(np.uint16) * 16 + 8, dict(bits_stored=12, rescale=(0.25, -512)), 'png16'),
    '12-bit, rescale and window': lambda a: (a.astype(np.uint16) * 16, dict(bits_stored=12, rescale=(0.5, -100),
                                                                            window=exact_window(-100, 0.5 * 16 * 255 - 100)), 'png'),
    '12-bit MONOCHROME1, window': lambda a: ((255 - a).astype(np.uint16) * 16, dict(photometric='MONOCHROME1', bits_stored=12,
                                                                                    window=exact_window(0, 16 * 255)), 'png'),
    '12-bit, VOI LUT': lambda a: (a.astype(np.uint16) * 16, dict(bits_stored=12, voi_lut=np.arange(4096) // 16,
                                                                 window=(100, 10)), 'png'),  # the table wins over the window
    '12-bit, 16-bit VOI LUT': lambda a: (a.astype(np.uint16) * 16, dict(bits_stored=12, voi_lut=np.arange(4096) // 16 * 257), 'png'),
    '16-bit signed, rescale, window': lambda a: (a.astype(np.int16) * 64 - 8192, dict(rescale=(1, -1024),
                                                                                     window=exact_window(-8192 - 1024, 255 * 64 - 8192 - 1024)), 'png'),
}


def write_variant(a, name, folder):
    "The DICOM of `a` for variant `name` and the PNG it must read as"
    stored, kw, ref = VARIANTS[name](a)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace(' ', '_').replace(',', '')
    dcm = write_dicom(stored, folder/f'{stem}.dcm', **kw)
    png = folder/f'{stem}.png'
    if ref == 'png': Image.fromarray(a).save(png)
    else: Image.fromarray(stored.astype(np.uint16)).save(png)
    return dcm, png


def assert_same_pixels(dcm, png, presets=(grey_preset(64), imagenet_preset(32))):
    x, y = np.asarray(load_image(dcm)).astype(int), np.asarray(load_image(png)).astype(int)
    assert x.shape == y.shape and np.abs(x - y).max() <= 1, (dcm.name, np.abs(x - y).max())
    for p in presets:
        d = (decode_resize(dcm, p).int() - decode_resize(png, p).int()).abs().max().item()
        assert d <= 1, (dcm.name, p.name, d)


# --- pydicom's own files ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['RG3_UNCR.dcm', 'RG1_UNCR.dcm'])
def test_bundled_monochrome1_cr_reads_with_bone_bright(name):
    import pydicom
    p = bundled(name)
    ds = pydicom.dcmread(p)
    assert ds.Modality == 'CR' and ds.PhotometricInterpretation == 'MONOCHROME1' and 'WindowCenter' in ds
    voi = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)  # pydicom's own pipeline, output 0..2**bits-1
    expected = 255 - np.rint(voi / (2 ** ds.BitsStored - 1) * 255)    # MONOCHROME1: inverted
    got = np.asarray(read_dicom(p)).astype(int)
    assert got.shape == ds.pixel_array.shape and np.abs(got - expected).max() <= 1
    assert np.corrcoef(ds.pixel_array[::8, ::8].ravel(), got[::8, ::8].ravel())[0, 1] < -0.8  # low stored values are bright
    s = dicom_summary(p)
    assert s['photometric_interpretation'] == 'MONOCHROME1' and s['bits_stored'] == ds.BitsStored and s['window'] is not None


def test_bundled_cr_windows_and_compressed_copy():
    import pydicom
    p = bundled('RG3_UNCR.dcm')
    a = np.asarray(read_dicom(p)); bone = np.asarray(read_dicom(p, window=(450, 300)))
    assert not np.array_equal(a, bone) and (bone == 255).mean() > (a == 255).mean()  # a narrow window saturates more
    j2k = bundled('RG3_J2KR.dcm')   # the same radiograph, JPEG 2000 lossless
    if get_decoder(pydicom.dcmread(j2k, stop_before_pixels=True).file_meta.TransferSyntaxUID).is_available: assert np.array_equal(np.asarray(read_dicom(j2k)), a)
    else:
        with pytest.raises(UnreadableImage, match='pip install'): read_dicom(j2k)


@pytest.mark.parametrize('name, reason', [
    ('examples_rgb_color.dcm', 'colour DICOM (RGB'), ('examples_palette.dcm', 'colour DICOM (PALETTE COLOR'),
    ('examples_ybr_color.dcm', 'multi-frame DICOM (30 frames)'), ('emri_small.dcm', 'multi-frame'),
    ('rtplan.dcm', 'without pixel data'), ('MR_truncated.dcm', 'damaged or undecodable DICOM pixel data'),
    ('liver_1frame.dcm', '1-bit pixels')])
def test_bundled_files_refused_with_a_reason(name, reason):
    p = bundled(name)
    for read in (read_dicom, load_image):
        with pytest.raises(UnreadableImage, match=re.escape(reason)) as e: read(p)
        assert e.value.path == Path(p) and str(p) in str(e.value)


def test_compressed_without_decoder_names_the_packages():
    if get_decoder(JPEGLSLossless).is_available: pytest.skip('a JPEG-LS decoder is installed here')
    with pytest.raises(UnreadableImage) as e: load_image(bundled('MR_small_jpeg_ls_lossless.dcm'))
    msg = e.value.reason
    assert 'JPEG-LS' in msg and '`pip install pylibjpeg pylibjpeg-libjpeg`' in msg and 'python-gdcm' in msg


def test_decodable_compressed_and_big_endian_files_read():
    ref = np.asarray(read_dicom(bundled('MR_small.dcm')))
    for name in ('MR_small_RLE.dcm', 'MR_small_bigendian.dcm', 'MR_small_implicit.dcm'):
        assert np.array_equal(np.asarray(read_dicom(bundled(name))), ref), name


# --- DICOMs written from images ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', list(VARIANTS))
def test_synthetic_dicom_reaches_the_model_as_the_png(name, tmp_path):
    a = synthetic_image()
    dcm, png = write_variant(a, name, tmp_path)
    assert is_dicom(dcm) and not is_dicom(png)
    assert_same_pixels(dcm, png)


def test_fracatlas_dicoms_reach_the_model_as_the_jpeg(fracatlas_dir, tmp_path):
    jpgs = [sorted((fracatlas_dir/'images'/c).glob('*.jpg'))[3] for c in ('Fractured', 'Non_fractured')]
    for jpg in jpgs:
        a = np.asarray(load_image(jpg))
        for name in VARIANTS:
            dcm, png = write_variant(a, name, tmp_path/jpg.stem)
            if VARIANTS[name](a)[2] == 'png': png = jpg  # compare with the FracAtlas file itself
            assert_same_pixels(dcm, png)


def test_window_argument_overrides_the_file(tmp_path):
    a = synthetic_image()
    dcm, _ = write_variant(a, '12-bit, VOI LUT', tmp_path)
    full = np.asarray(read_dicom(dcm, window=exact_window(0, 16 * 255))).astype(int)
    assert np.abs(full - a).max() <= 1
    narrow = np.asarray(read_dicom(dcm, window=(2048, 512)))
    stored = a.astype(int) * 16
    assert (narrow[stored < 1792] == 0).all() and (narrow[stored > 2304] == 255).all()
    # several windows in the file: the first is used
    d2 = write_dicom(a.astype(np.uint16) * 16, tmp_path/'multi.dcm', bits_stored=12, window=([2048.5, 100], [4096, 50]))
    assert dicom_summary(d2)['window'] == (2048.5, 4096.0)
    assert np.abs(np.asarray(read_dicom(d2)).astype(int) - np.rint(a.astype(int) * 16 / 4095 * 255)).max() <= 1


def test_files_without_suffix_and_max_side(tmp_path):
    a = np.tile(np.linspace(0, 255, 600).astype(np.uint8), (300, 1))
    dcm = write_dicom(a, tmp_path/'big.dcm')
    bare = tmp_path/'1.2.840.10008.99'; bare.write_bytes(dcm.read_bytes())   # archives name files by UID
    assert is_dicom(bare) and '.dcm' in IMAGE_EXTS and '.dicom' in IMAGE_EXTS
    assert load_image(bare).size == (600, 300) and load_image(bare, max_side=256).size == (256, 128)
    # a dataset folder picks up .dcm, .dicom and suffix-less DICOMs
    for c in ('fractured', 'not fractured'):
        (tmp_path/'ds'/c).mkdir(parents=True)
        write_dicom(a, tmp_path/'ds'/c/'x.dcm'); write_dicom(255 - a, tmp_path/'ds'/c/'y.DICOM')
        (tmp_path/'ds'/c/'IM0001').write_bytes(write_dicom(a[::2], tmp_path/'tmp.dcm').read_bytes())
        (tmp_path/'ds'/c/'notes').write_text('not an image')
    ds = load_dataset(tmp_path/'ds')
    assert len(ds) == 6 and sorted(Path(s['path']).name for s in ds.skipped) == ['notes', 'notes']


def test_damaged_and_fake_dicoms_are_refused(tmp_path):
    good = write_dicom(synthetic_image(), tmp_path/'good.dcm')
    data = good.read_bytes()
    cases = {'empty.dcm': (b'', 'empty file'), 'header_cut.dcm': (data[:300], 'without pixel data'),
             'pixels_gone.dcm': (data[:-96 * 96 - 12], 'probably cut short'), 'mid_element.dcm': (data[:-96 * 96 - 2], 'damaged DICOM file'),
             'pixels_cut.dcm': (data[:-500], 'damaged or undecodable DICOM pixel data'),
             'text.dcm': (b'scanned by the night shift' * 10, 'not a DICOM file')}
    for name, (content, reason) in cases.items():
        (tmp_path/name).write_bytes(content)
        with pytest.raises(UnreadableImage, match=reason): load_image(tmp_path/name)
    with pytest.raises(UnreadableImage, match='cannot read'): read_dicom(tmp_path/'missing.dcm')
    three = write_dicom(np.zeros((3, 20, 20), np.uint8), tmp_path/'frames.dcm')
    with pytest.raises(UnreadableImage, match='multi-frame DICOM \\(3 frames\\)'): load_image(three)
    rgb = write_dicom(np.zeros((20, 20, 3), np.uint8), tmp_path/'rgb.dcm', photometric='RGB')
    with pytest.raises(UnreadableImage, match='colour DICOM \\(RGB, 3 samples'): load_image(rgb)
    import pydicom
    ds = pydicom.dcmread(good); del ds.PhotometricInterpretation; ds.save_as(tmp_path/'no_pi.dcm')
    with pytest.raises(UnreadableImage, match='without PhotometricInterpretation .*whether low values are black or white'):
        load_image(tmp_path/'no_pi.dcm')


def test_the_bytes_decide_not_the_name(tmp_path):
    "A PNG named .dcm is read as the PNG; a DICOM without preamble and suffix (an archive's IM0001) as the DICOM"
    (tmp_path/'png_named.dcm').write_bytes(_png_bytes())
    assert not is_dicom(tmp_path/'png_named.dcm') and load_image(tmp_path/'png_named.dcm').size == (8, 8)
    good = write_dicom(synthetic_image(), tmp_path/'good.dcm')
    (tmp_path/'IM0001').write_bytes(good.read_bytes()[132:])  # no preamble, no 'DICM': it starts with its header
    assert not is_dicom(tmp_path/'IM0001')
    assert np.array_equal(np.asarray(load_image(tmp_path/'IM0001')), np.asarray(load_image(good)))
    (tmp_path/'IM0002').write_bytes(b'\x08\x00' + bytes(300))  # starts like one, is none
    with pytest.raises(UnreadableImage, match='not an image Pillow can read'): load_image(tmp_path/'IM0002')


def test_a_dicom_claiming_too_many_pixels_or_a_window_narrower_than_1_is_refused(tmp_path):
    import pydicom
    good = write_dicom(synthetic_image(), tmp_path/'good.dcm')
    ds = pydicom.dcmread(good); ds.Rows = ds.Columns = 20000; ds.save_as(tmp_path/'bomb.dcm')  # claims 400 M pixels
    with pytest.raises(UnreadableImage, match=r'DICOM image of 20000 x 20000 pixels, more than 178,956,970: probably a decompression bomb'):
        load_image(tmp_path/'bomb.dcm')
    ds = pydicom.dcmread(good); ds.WindowCenter, ds.WindowWidth = 128, 0; ds.save_as(tmp_path/'ww0.dcm')
    with pytest.raises(UnreadableImage, match=r'ww0\.dcm: its display window has a width \(WindowWidth\) of 0; DICOM requires at least 1'):
        load_image(tmp_path/'ww0.dcm')
    assert read_dicom(tmp_path/'ww0.dcm', window=(128, 256)).size == (96, 96)  # the way round it the message names


def test_headerless_dicoms_in_the_audit_and_the_modality_warning(tmp_path):
    "A DICOM without preamble or suffix: its size in the audit (it raised KeyError), and a CT slice so named still warned about"
    import csv
    from fracture_course.data import modality_warning
    small = write_dicom(np.zeros((20, 24), np.uint8), tmp_path/'s.dcm'); (tmp_path/'IM1').write_bytes(small.read_bytes()[132:])
    big = write_dicom(np.zeros((40, 40), np.uint8), tmp_path/'b.dcm'); (tmp_path/'IM2').write_bytes(big.read_bytes()[132:])
    with open(tmp_path/'m.csv', 'w', newline='') as f: csv.writer(f).writerows([['path', 'label', 'split'], ['IM1', 1, 'train'], ['IM2', 0, 'train']])
    rep = audit(tmp_path/'m.csv')
    assert [(Path(u['path']).name, u['width'], u['height']) for u in rep.too_small] == [('IM1', 24, 20)] and rep.unreadable == []
    ct = write_dicom(np.full((40, 40), 40, np.int16), tmp_path/'ct.dcm', modality='CT'); (tmp_path/'IM3').write_bytes(ct.read_bytes()[132:])
    assert 'CT' in modality_warning(tmp_path/'IM3') and 'CT' in modality_warning('IM3', (tmp_path/'IM3').read_bytes())
    assert modality_warning(tmp_path/'IM2') is None


def test_a_linear_exact_window_may_be_narrower_than_1(tmp_path):
    import pydicom
    ds = pydicom.dcmread(write_dicom(np.arange(64 * 64).reshape(64, 64).astype(np.uint16) % 4, tmp_path/'w.dcm'))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1.5, 0.5, 'LINEAR_EXACT'; ds.save_as(tmp_path/'exact.dcm')
    assert load_image(tmp_path/'exact.dcm').size == (64, 64)
    ds.WindowWidth = 0; ds.save_as(tmp_path/'zero.dcm')
    with pytest.raises(UnreadableImage, match=r'width \(WindowWidth\) of 0; DICOM requires more than 0'): load_image(tmp_path/'zero.dcm')


def _png_bytes():
    import io
    b = io.BytesIO(); Image.fromarray(np.zeros((8, 8), np.uint8)).save(b, format='PNG'); return b.getvalue()


# --- downstream: datasets, cache, audit, predict, evaluate ------------------------------------------------------------

def twin_datasets(root, counts=(('train', 4), ('val', 4), ('test', 6)), kind='12-bit MONOCHROME1, window'):
    "The same bar images as PNG split folders and as DICOM split folders; returns (png_root, dcm_root)"
    rng = np.random.default_rng(0)
    for s, n in counts:
        for c in ('fractured', 'not fractured'):
            for i in range(n):
                a = rng.integers(0, 80, (40, 40), dtype=np.uint8); a[0, 0] = 0; a[0, 1] = 255
                if c == 'fractured': a[18:22, 5:35] = 250
                (root/'png'/s/c).mkdir(parents=True, exist_ok=True); Image.fromarray(a).save(root/'png'/s/c/f'{c[:3]}{i}.png')
                stored, kw, _ = VARIANTS[kind](a)
                write_dicom(stored, root/'dcm'/s/c/f'{c[:3]}{i}.dcm', modality='CR', **kw, **PATIENT)
    return root/'png', root/'dcm'


@pytest.fixture(scope='module')
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp('twins')
    png, dcm = twin_datasets(root)
    from fracture_course.learner import save_checkpoint
    from fracture_course.models import create_model
    torch.manual_seed(0)
    model = create_model('simple_cnn', img_size=32, widths=(4, 8), hidden=8)
    save_checkpoint(root/'model.pt', model, preprocessing=grey_preset(32).to_dict(), metrics={'threshold': 0.5})
    return root, png, dcm


def test_dataset_and_cache_decode_dicoms_as_pngs(twins):
    _, png, dcm = twins
    dp, dd = load_dataset(png), load_dataset(dcm)
    assert dp.counts() == dd.counts() and not dd.skipped
    cp, cd = ImageCache(dp.items, grey_preset(32), threads=2), ImageCache(dd.items, grey_preset(32), threads=2)
    assert np.abs(cp.arr.astype(int) - cd.arr.astype(int)).max() <= 1


def test_audit_reports_dicom_files_without_patient_tags(twins, capsys):
    _, _, dcm = twins
    rep = audit(dcm)
    assert rep.dicom['files'] == 28 and rep.dicom['photometric_interpretation'] == {'MONOCHROME1': 28}
    assert rep.dicom['bits_stored'] == {'12': 28} and rep.dicom['modality'] == {'CR': 28}
    assert rep.modes == {'DICOM': 28} and rep.sizes['width_max'] == 40 and not rep.unreadable and not rep.damaged
    assert 'DICOM files: 28 (photometric MONOCHROME1: 28' in rep.summary()
    p = argparse.ArgumentParser(); add_audit_args(p)
    assert audit_command(p.parse_args([str(dcm), '--json', '-'])) == 0
    out = capsys.readouterr().out
    assert json.loads(out)['dicom']['files'] == 28
    for s in (out, rep.summary()): assert not any(x in s for x in PHI)


def test_predict_and_evaluate_score_dicoms_as_pngs(twins, capsys):
    from fracture_course.evaluate import add_evaluate_args, evaluate_command
    from fracture_course.interpret import add_predict_args, predict_command
    root, png, dcm = twins
    pngs = sorted((png/'test'/'fractured').glob('*.png'))[:3]
    dcms = [dcm/'test'/'fractured'/(f.stem + '.dcm') for f in pngs]
    p = argparse.ArgumentParser(); add_predict_args(p)
    assert predict_command(p.parse_args([str(root/'model.pt'), *map(str, pngs + dcms), '--device', 'cpu'])) == 0
    rows = [l.split('\t') for l in capsys.readouterr().out.splitlines() if l.endswith(('.png', '.dcm'))]
    assert len(rows) == 6 and [r[0] for r in rows[:3]] == [r[0] for r in rows[3:]]   # same probabilities
    res = {}
    for name, data in (('png', png), ('dcm', dcm)):
        p = argparse.ArgumentParser(); add_evaluate_args(p)
        assert evaluate_command(p.parse_args([str(root/'model.pt'), '--data', str(data), '--out', str(root/f'ev-{name}'),
                                              '--n-boot', '0', '--device', 'cpu'])) == 0
        res[name] = json.loads((root/f'ev-{name}'/'metrics.json').read_text())
    assert res['dcm']['images'] == 12 and res['dcm']['unreadable'] == []
    for k in ('accuracy', 'sensitivity', 'specificity', 'auroc', 'confusion_matrix'): assert res['dcm'][k] == res['png'][k], k


def test_patient_tags_never_appear_in_any_output(twins, tmp_path, capsys, caplog):
    "Reading, summarising, auditing, predicting and refusing files that carry a patient's name, ID and birth date"
    from fracture_course.interpret import add_predict_args, predict_command
    root, _, dcm = twins
    files = sorted(dcm.rglob('*.dcm'))[:2]
    bad = [write_dicom(np.zeros((2, 8, 8), np.uint8), tmp_path/'frames.dcm', **PATIENT),
           write_dicom(np.zeros((8, 8, 3), np.uint8), tmp_path/'rgb.dcm', photometric='RGB', **PATIENT)]
    cut = tmp_path/'cut.dcm'; cut.write_bytes(files[0].read_bytes()[:-300])
    bad.append(cut)
    caplog.set_level(logging.DEBUG)
    texts = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for f in files:
            load_image(f); read_dicom(f, window=(1000, 500)); texts.append(repr(dicom_summary(f)))
        for f in bad:
            with pytest.raises(UnreadableImage) as e: load_image(f)
            texts += [str(e.value), repr(e.value)]
        rep = audit(dcm); texts += [rep.summary(), json.dumps(rep.to_dict(), default=str)]
        p = argparse.ArgumentParser(); add_predict_args(p)
        assert predict_command(p.parse_args([str(root/'model.pt'), *map(str, files + bad), '--device', 'cpu'])) == 1
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text] + [str(o.message) for o in w]
    assert 'could not be read' in out.err and 'multi-frame' in out.err   # the refusals were reported...
    for t in texts: assert not any(x in t for x in PHI), t            # ...without the patient's tags


def test_a_damaged_header_value_is_an_unreadable_image_not_a_crash(tmp_path):
    "badVR.dcm has a number written '1A': the file is named as unreadable, the error quotes no header value, and audit goes on"
    import shutil
    bad = bundled('badVR.dcm')
    with pytest.raises(UnreadableImage, match='damaged DICOM file') as e: load_image(bad)
    assert isinstance(e.value, ValueError) and '1A' not in str(e.value) and 'badVR.dcm' in str(e.value)
    for split, cls in (('train', 'fractured'), ('train', 'not fractured')):
        d = tmp_path/'ds'/split/cls; d.mkdir(parents=True)
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(d/'ok.png')
    shutil.copy(bad, tmp_path/'ds'/'train'/'fractured'/'bad.dcm')
    report = audit(load_dataset(tmp_path/'ds'))
    assert any('bad.dcm' in str(u['path']) for u in report.unreadable)


def _dicom_set(root, names=()):
    "Split folders of small written DICOMs (two of each class in each split), plus the files `names` maps to folders; returns `root`"
    for split in ('train', 'val', 'test'):
        for cls in ('fractured', 'not fractured'):
            for i in range(2): write_dicom((np.arange(40 * 40).reshape(40, 40) * (i + 2)).astype(np.uint16), Path(root, split, cls, f'{i}.dcm'))
    return Path(root)

@pytest.mark.parametrize('tag', ['Rows', 'Columns', 'BitsAllocated'])
@pytest.mark.parametrize('how', ['missing', 'empty'])
def test_a_dicom_without_rows_columns_or_bits_allocated_is_left_out_not_a_crash(tmp_path, tag, how):
    "Such a file made header_problem, and so load_dataset, raise a raw AttributeError or TypeError: one file stopped the whole dataset"
    import pydicom
    from fracture_course.data import LeftOutWarning, header_problem
    root = _dicom_set(tmp_path/'ds')
    ds = pydicom.dcmread(root/'train'/'fractured'/'0.dcm')
    if how == 'missing': delattr(ds, tag)
    else: ds[tag].value = None
    bad = root/'train'/'fractured'/'bad.dcm'; ds.save_as(bad)
    assert header_problem(bad).startswith(f'DICOM image header without {tag} (required to lay out its pixels)')
    with pytest.warns(LeftOutWarning, match=f'bad.dcm \\(DICOM image header without {tag}'): data = load_dataset(root)
    assert len(data) == 12 and [Path(s['path']).name for s in data.skipped] == ['bad.dcm']

def test_a_deflate_compressed_dicom_loads_and_is_not_called_cut_short(tmp_path):
    "image_dfl.dcm is valid, but its pixel data's position in the inflated data was compared with the compressed file's size"
    import shutil
    from fracture_course.data import header_problem
    dfl = bundled('image_dfl.dcm')
    assert header_problem(dfl) is None and load_image(dfl).size == (512, 512)
    root = _dicom_set(tmp_path/'ds'); shutil.copy(dfl, root/'train'/'fractured'/'dfl.dcm')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no LeftOutWarning
        data = load_dataset(root)
    assert 'dfl.dcm' in {o.path.name for o in data.items} and not data.skipped
    b = Path(dfl).read_bytes(); (tmp_path/'cut.dcm').write_bytes(b[:len(b) // 2])  # a cut one is still refused
    assert header_problem(tmp_path/'cut.dcm').startswith('damaged DICOM file')

def test_pydicoms_lines_quoting_a_header_value_never_reach_a_warning_or_a_log(caplog):
    "badVR.dcm (pydicom's) has a number written '1A': pydicom warns and logs it quoted; the course drops both and refuses the file naming no value"
    import logging, warnings
    from pydicom.data import get_testdata_file
    bad = get_testdata_file('badVR.dcm')
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter('always')
        with pytest.raises(UnreadableImage, match=r"badVR.dcm: damaged DICOM file \(ValueError while reading its header values\)") as e: load_image(bad)
    assert "1A" not in str(e.value)
    assert not [w for w in caught if '1A' in str(w.message)], [str(w.message) for w in caught]
    assert not [r for r in caplog.records if '1A' in r.getMessage()], [r.getMessage() for r in caplog.records]
    logging.getLogger('pydicom').warning('Reading a file the course did not ask for')  # other pydicom lines still pass
    assert caplog.records[-1].getMessage() == 'Reading a file the course did not ask for'
