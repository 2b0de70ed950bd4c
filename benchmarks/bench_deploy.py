"""Deployment speed on the CPU: PyTorch against ONNX Runtime (batch 1 and 32), and the web API under 8 concurrent clients.

    python benchmarks/bench_deploy.py                 # the quick profile's enhanced_cnn (64 px) and EfficientNet-Lite0 (256 px)
    python benchmarks/bench_deploy.py --export-all    # also: export time and parity of every registered model
    python benchmarks/bench_deploy.py --checkpoint runs/lite0/best.pt
    python benchmarks/bench_deploy.py --server-only --uploads ../shared/data/FracAtlas/images/Fractured   # real X-rays as uploads
    python benchmarks/bench_deploy.py --checkpoint ~/.cache/fracture_course/deploy/synthetic/best.pt --resampling ../shared/data/FracAtlas/images/Fractured
                                                      # how far other resizers move a deployed model's probabilities and calls

Models are untrained unless --checkpoint is given (speed does not depend on the weights). Each figure is the median
of --repeats timed runs after a warm-up; the thread count of both runtimes is printed with it. The server figures
come from a uvicorn server in this process, 200 requests from 8 client threads, each request one PNG upload.
"""
import argparse, io, os, socket, statistics, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fracture_course.learner import save_checkpoint, load_checkpoint
from fracture_course.models import create_model, model_names
from fracture_course.transforms import Preset, grey_preset, imagenet_preset
from fracture_course.evaluate import saved_operating_point
from fracture_course.deploy import DeployedModel, OnnxModel, export_onnx, make_app

def tiny(arch:str, preset:Preset, path:Path) -> Path:
    kw = {'pretrained': False} if arch in ('resnet18', 'densenet121', 'efficientnet_lite0') else {}
    if arch in ('simple_cnn', 'enhanced_cnn'): kw['img_size'] = preset.size
    if arch == 'enhanced_cnn': kw.update(widths=(8, 16, 32, 32, 32, 32), hidden=32)
    if arch == 'simple_cnn': kw.update(widths=(8, 16, 32))
    torch.manual_seed(0)
    return save_checkpoint(path, create_model(arch, in_channels=preset.channels, **kw), preprocessing=preset.to_dict())

def median_seconds(f, repeats:int) -> float:
    f()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def runtime_rows(ckpt:Path, onnx_path:Path, threads:int, repeats:int):
    torch.set_num_threads(threads)
    model, info = load_checkpoint(ckpt)
    preset = Preset.from_dict(info['preprocessing'])
    op = saved_operating_point(info)
    wrapped = DeployedModel(model, preset, op['temperature'], op['tta']).eval()  # as export_onnx wraps it
    om = OnnxModel(onnx_path, threads=threads)
    rng = np.random.default_rng(0)
    for bs in (1, 32):
        x = torch.from_numpy(rng.integers(0, 256, (bs, 1, preset.resize, preset.resize), dtype=np.uint8))
        with torch.no_grad(): t_pt = median_seconds(lambda: wrapped(x), repeats)
        t_ox = median_seconds(lambda: om.predict(x), repeats)
        for name, t in (('PyTorch', t_pt), ('ONNX Runtime', t_ox)):
            print(f"| {info['arch']} {preset.resize} px | {name} | {threads} | {bs} | {t / bs * 1e3:.2f} | {bs / t:.0f} |", flush=True)

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def server_rows(ckpt:Path, n_requests:int=200, clients:int=8, uploads:Path|None=None):
    import httpx, uvicorn
    from PIL import Image
    model, info = load_checkpoint(ckpt)
    side = Preset.from_dict(info['preprocessing']).resize
    rng = np.random.default_rng(0)
    pngs = []
    if uploads:  # real files, e.g. FracAtlas JPEGs (about 450 px, 30 kB): decoding them is most of a request's work
        files = sorted(p for p in Path(uploads).iterdir() if p.suffix.lower() in ('.png', '.jpg', '.jpeg'))[:16]
        pngs = [p.read_bytes() for p in files]
        print(f"<!-- uploads: {len(pngs)} files from {uploads}, {sum(map(len, pngs)) / len(pngs) / 1e3:.0f} kB on average -->", file=sys.stderr)
    for _ in range(0 if pngs else 4):
        b = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (side * 2, side * 2), dtype=np.uint8)).save(b, 'PNG'); pngs.append(b.getvalue())
    server = uvicorn.Server(uvicorn.Config(make_app(ckpt), host='127.0.0.1', port=free_port(), log_level='warning'))
    t = threading.Thread(target=server.run, daemon=True); t.start()
    while not server.started: time.sleep(0.05)
    url = f'http://127.0.0.1:{server.config.port}'
    for with_heatmap in (False, True):
        query = '?heatmap=true' if with_heatmap else ''
        def one_client(k):
            lat, codes = [], []
            with httpx.Client(base_url=url, timeout=120) as c:
                for i in range(k, n_requests, clients):
                    t0 = time.perf_counter()
                    data = pngs[i % len(pngs)]
                    r = c.post('/predict' + query, files={'file': (f'{i}.jpg' if data[:2] == b'\xff\xd8' else f'{i}.png', data)})
                    lat.append(time.perf_counter() - t0); codes.append(r.status_code)
            return lat, codes
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as ex: res = list(ex.map(one_client, range(clients)))
        wall = time.perf_counter() - t0
        lat = sorted(x for l, _ in res for x in l); ok = sum(c == 200 for _, cs in res for c in cs)
        p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"| {info['arch']} {side} px{', heat map (LayerCAM)' if with_heatmap else ''}{', real uploads' if uploads else ''} | {n_requests} from {clients} | {ok} | "
              f"{p50 * 1e3:.0f} | {p95 * 1e3:.0f} | {n_requests / wall:.1f} |", flush=True)
    server.should_exit = True; t.join(10)

def resampling_rows(ckpt:Path, folder:Path, n:int=200):
    "Probabilities of the deployed model on images resized the course's way (the ONNX input note) and other common ways"
    from PIL import Image
    import torchvision.transforms.v2.functional as TF
    from fracture_course.data import load_image
    from fracture_course.evaluate import load_inputs
    model, info = load_checkpoint(ckpt)
    preset, op = Preset.from_dict(info['preprocessing']), saved_operating_point(info, ckpt)
    if not preset.squash: raise SystemExit(f"{ckpt}: --resampling compares squashing resizers; this preset crops")
    deployed, r = DeployedModel(model, preset, op['temperature'], op['tta']).eval(), preset.resize
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in ('.png', '.jpg', '.jpeg'))[:n]
    course, ok, _ = load_inputs(files, preset)
    files = [files[i] for i in ok]
    imgs = [load_image(f) for f in files]
    others = {"Pillow bilinear without reducing_gap": lambda im: np.array(im.resize((r, r), Image.Resampling.BILINEAR)),
              "Pillow bicubic": lambda im: np.array(im.resize((r, r), Image.Resampling.BICUBIC)),
              "Pillow Lanczos": lambda im: np.array(im.resize((r, r), Image.Resampling.LANCZOS)),
              "torchvision bilinear, antialias": lambda im: TF.resize(torch.from_numpy(np.array(im))[None], [r, r], antialias=True)[0].numpy()}
    with torch.no_grad(): p0 = deployed(course)
    calls0 = p0 > op['threshold']
    print(f"\n{ckpt.name} ({info.get('arch')}, {r} px, threshold {op['threshold']:.3f}) on {len(files)} images of {folder}")
    print('| resized with | pixels that differ | max abs diff of P(fracture) | mean abs diff | calls that change |\n|---|---|---|---|---|')
    for name, f in others.items():
        x = torch.from_numpy(np.stack([f(im) for im in imgs]))[:, None].to(torch.uint8)
        with torch.no_grad(): p = deployed(x)
        d = (p - p0).abs()
        print(f"| {name} | {(x != course).float().mean():.1%} | {d.max():.3f} | {d.mean():.4f} | {int(((p > op['threshold']) != calls0).sum())} of {len(files)} |")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--checkpoint', help='benchmark this checkpoint instead of the two default models')
    ap.add_argument('--repeats', type=int, default=20)
    ap.add_argument('--export-all', action='store_true', help='export every registered model (untrained, 64 px) and report time and parity')
    ap.add_argument('--uploads', metavar='DIR', help='send the images of DIR (up to 16, in turn) to the server instead of random 128-px PNGs')
    ap.add_argument('--server-only', action='store_true', help='skip the runtime rows: only the web API under load')
    ap.add_argument('--resampling', metavar='DIR', help="with --checkpoint: only compare the course's resize with other resizers on DIR's images")
    args = ap.parse_args()
    if args.resampling:
        if not args.checkpoint: raise SystemExit('--resampling needs --checkpoint (a trained model)')
        return resampling_rows(Path(args.checkpoint).expanduser(), Path(args.resampling))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores; {torch.get_num_threads()} torch threads by default")
    tmp = Path(tempfile.mkdtemp())
    ckpts = [Path(args.checkpoint)] if args.checkpoint else [
        tiny('enhanced_cnn', Preset('stats', 64, 1, 64, (0.22,), (0.19,), squash=True), tmp/'enhanced.pt'),
        tiny('efficientnet_lite0', imagenet_preset(256, squash=True), tmp/'lite0.pt')]
    print('\n| model | runtime | threads | batch | ms per image | images/s |\n|---|---|---|---|---|---|')
    onnx = {}
    for ck in ([] if args.server_only else ckpts):
        t0 = time.perf_counter(); onnx[ck] = export_onnx(ck, ck.with_suffix('.onnx')); t_exp = time.perf_counter() - t0
        print(f"<!-- {ck.name}: exported in {t_exp:.1f} s -->", file=sys.stderr)
        for threads in sorted({1, os.cpu_count() or 1}): runtime_rows(ck, onnx[ck], threads, args.repeats)
    torch.set_num_threads(os.cpu_count() or 1)
    print('\n| server (uvicorn, PyTorch) | requests | answered 200 | p50 ms | p95 ms | requests/s |\n|---|---|---|---|---|---|')
    server_rows(ckpts[0], uploads=args.uploads)
    if args.export_all:
        torch.set_num_threads(1)
        print('\n| model (untrained, 64 px) | export s | ONNX MB | max abs diff vs PyTorch (32 random images) |\n|---|---|---|---|')
        for arch in model_names():
            preset = grey_preset(64) if arch in ('simple_cnn', 'enhanced_cnn') else imagenet_preset(64)
            try:
                ck = tiny(arch, preset, tmp/f'{arch}.pt')
                t0 = time.perf_counter(); out = export_onnx(ck, tmp/f'{arch}.onnx'); t = time.perf_counter() - t0
                model, _ = load_checkpoint(ck)
                x = torch.randint(0, 256, (32, 1, preset.resize, preset.resize), dtype=torch.uint8)
                with torch.no_grad(): want = DeployedModel(model, preset).eval()(x)
                diff = (OnnxModel(out, threads=1).predict(x) - want).abs().max().item()
                print(f"| {arch} | {t:.1f} | {out.stat().st_size / 1e6:.1f} | {diff:.1e} |", flush=True)
            except Exception as e: print(f"| {arch} | failed: {type(e).__name__}: {str(e)[:120]} | | |", flush=True)

if __name__ == '__main__': main()
