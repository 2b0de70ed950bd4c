"""Chapter 4's course-data run (SimpleCNN 8/16/32, OneCycleLR peak 3e-3, 12 epochs, flips, channels-last) with
64 and 128 hidden units at several seeds: the final epoch's validation AUROC (the split the choice is made on),
then test AUROC as a check. Usage: python benchmarks/bench_ch04_hidden.py [--seeds 42 0 1] [--hidden 64 128]"""
import argparse, time
import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc
from fracture_course.config import setup_chapter
from fracture_course.data import load_course_data
from fracture_course.transforms import get_dls, stats_preset
from fracture_course.models import create_model

def auroc(model, dl, device):
    "AUROC of `model` on `dl` (as chapter 4's `evaluate`)"
    model.eval(); probs, targets = [], []
    with torch.no_grad():
        for xb, yb in dl: probs.append(model(xb.to(device)).softmax(1)[:, 1]); targets.append(yb.to(device))
    return binary_auroc(torch.cat(probs), torch.cat(targets)).item()

def run(seed, hidden, epochs=12, peak_lr=3e-3):
    cfg = setup_chapter('quick', seed=seed); device = cfg.torch_device
    data = load_course_data(cfg, verbose=False); tensors = cfg.cache_dir/'tensors'
    dls = get_dls(data, stats_preset(data, cfg.image_size, cache_dir=tensors), 'flip', 32, cache_dir=tensors, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model('simple_cnn', img_size=cfg.image_size, widths=(8, 16, 32), hidden=hidden).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=peak_lr); loss_func = nn.CrossEntropyLoss()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak_lr, total_steps=epochs * len(dls.train))
    for _ in range(epochs):
        model.train()
        for xb, yb in dls.train:
            loss = loss_func(model(xb.to(device)), yb.to(device)); loss.backward(); opt.step(); opt.zero_grad(); sched.step()
        valid = auroc(model, dls.valid, device)  # every epoch, as the chapter does: iterating a loader draws from the random state
    return valid, auroc(model, dls.test, device)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--seeds', type=int, nargs='+', default=[42, 0, 1])
    ap.add_argument('--hidden', type=int, nargs='+', default=[64, 128]); a = ap.parse_args()
    for h in a.hidden:
        for s in a.seeds:
            t = time.perf_counter(); v, te = run(s, h)
            print(f'hidden {h} seed {s}: valid AUROC {v:.3f} (test {te:.3f}) in {time.perf_counter() - t:.0f} s', flush=True)
