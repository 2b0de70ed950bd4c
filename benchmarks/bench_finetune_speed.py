"""Fine-tuning throughput on this CPU: EfficientNet-Lite0 training images per second (forward, backward, Adam step)
at several input sizes, as it is, with its early stages frozen, channels-last, and both.

Random inputs, so only the compute is measured (the course's cached loaders deliver hundreds of images per second,
far above these figures). Each figure is the median of `--repeats` measurements of `--steps` steps after a warm-up.

usage: python benchmarks/bench_finetune_speed.py [--sizes 160 224 256] [--bs 32] [--steps 4] [--repeats 3] [--threads 0]

`--threads 0` (the default) leaves torch's default (all cores), as a training run uses them."""
import argparse, statistics
import torch
from fracture_course.models import create_model
from fracture_course.finetune import train_speed

EARLY = {'stages 0-1 frozen': ('conv_stem', 'bn1', 'blocks.0', 'blocks.1'),
         'stages 0-2 frozen': ('conv_stem', 'bn1', 'blocks.0', 'blocks.1', 'blocks.2')}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[160, 224, 256])
    ap.add_argument('--bs', type=int, default=32); ap.add_argument('--steps', type=int, default=4)
    ap.add_argument('--repeats', type=int, default=3); ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    model = create_model('efficientnet_lite0')
    configs = {'as it is': ((), False), 'channels-last': ((), True),
               **{k: (v, False) for k, v in EARLY.items()}, **{f'{k} + channels-last': (v, True) for k, v in EARLY.items()}}
    print(f'EfficientNet-Lite0 training throughput, images/s (batch {a.bs}, {torch.get_num_threads()} threads, torch {torch.__version__})')
    print(f"{'':34}" + ''.join(f'{s:>8} px' for s in a.sizes))
    for name, (frozen, cl) in configs.items():
        row = [statistics.median(train_speed(model, s, a.bs, a.steps, frozen, cl) for _ in range(a.repeats)) for s in a.sizes]
        print(f'{name:34}' + ''.join(f'{v:11.1f}' for v in row), flush=True)

if __name__ == '__main__': main()
