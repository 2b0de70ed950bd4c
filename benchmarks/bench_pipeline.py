"""Images/s of the training data pipeline at 224 px on FracAtlas: a naive ImageFolder + PIL pipeline against the
course's cached pipeline (decode once to a uint8 cache, augment on tensors), same augmentation, same batch size.
Then, with flips as the only augmentation (the quick profile's): batches made image by image against whole batches
in one go (`batch_transform`), which must be identical.

    python benchmarks/bench_pipeline.py [--data ../shared/data/FracAtlas] [--epochs 3] [--bs 32]
"""
import argparse, os, sys, time
from pathlib import Path
import torch
from PIL import ImageFile
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2
from fracture_course.data import load_dataset
from fracture_course.transforms import get_dls, grey_preset, imagenet_preset, loader_throughput, IMAGENET_MEAN, IMAGENET_STD

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default=str(Path(__file__).resolve().parents[2]/'shared/data/FracAtlas'))
    ap.add_argument('--epochs', type=int, default=3); ap.add_argument('--bs', type=int, default=32)
    ap.add_argument('--size', type=int, default=224); ap.add_argument('--workers', type=int, default=0)
    a = ap.parse_args()
    if not (Path(a.data)/'images').is_dir(): sys.exit(f'FracAtlas not found at {a.data}; pass --data')
    torch.manual_seed(0)
    n_cpu = os.cpu_count()
    print(f'FracAtlas train split at {a.size} px, batch {a.bs}, {a.workers} workers, {n_cpu} CPU cores, torch {torch.__version__}')
    data = load_dataset(a.data)
    train_paths = {str(o.path) for o in data.split('train')}
    # Naive: torchvision ImageFolder over the class folders (train split only), PIL transforms every epoch.
    ImageFile.LOAD_TRUNCATED_IMAGES = True   # what the write-ups did to get past FracAtlas's truncated JPEGs
    naive_tf = v2.Compose([v2.Grayscale(3), v2.Resize(round(a.size * 256 / 224)), v2.RandomHorizontalFlip(), v2.RandomRotation(10),
                           v2.CenterCrop(a.size), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])
    folder = datasets.ImageFolder(Path(a.data)/'images', transform=naive_tf, is_valid_file=lambda p: p in train_paths)
    naive = DataLoader(folder, batch_size=a.bs, shuffle=True, num_workers=a.workers, drop_last=True)
    naive_ips = loader_throughput(naive, a.epochs)
    # Cached: the course's pipeline, building the cache counted in epoch 1.
    t0 = time.perf_counter()
    dls = get_dls(data, imagenet_preset(a.size), 'light', bs=a.bs, num_workers=a.workers)
    build = time.perf_counter() - t0
    cached_ips = loader_throughput(dls.train, a.epochs)
    n = len(dls.train) * a.bs
    cached_ips[0] = n / (n / cached_ips[0] + build)
    print(f'{"epoch":>5} {"naive img/s":>12} {"cached img/s":>13} {"speed-up":>9}')
    for e, (x, y) in enumerate(zip(naive_ips, cached_ips), 1): print(f'{e:>5} {x:12.0f} {y:13.0f} {y / x:8.1f}x')
    print(f'cache: {len(folder)} images decoded in {build:.1f} s (counted in epoch 1), {dls.train.dataset.cache.nbytes / 1e6:.0f} MB uint8')
    flip_batches(data, a)

def flip_batches(data, a):
    "Flips only, greyscale squash preset: the training loader image by image, then in whole batches, seeded alike"
    dl = get_dls(data, grey_preset(a.size), 'flip', bs=a.bs).train  # no worker processes: both ways run here, on one random stream
    def epoch(batched):
        dl.dataset.batched = batched
        torch.manual_seed(0); dl.generator.manual_seed(0)
        t0 = time.perf_counter(); out = [xb for xb, _ in dl]
        return out, len(dl.dataset) / (time.perf_counter() - t0)
    epoch(True)  # warm the cache's pages
    (one, ips_one), (whole, ips_whole) = epoch(False), epoch(True)
    same = len(one) == len(whole) and all(torch.equal(x, y) for x, y in zip(one, whole))
    print(f'flips only, greyscale {a.size} px: {ips_one:.0f} images/s image by image, {ips_whole:.0f} in whole batches '
          f'({ips_whole / ips_one:.1f}x); identical batches: {same}')

if __name__ == '__main__': main()
