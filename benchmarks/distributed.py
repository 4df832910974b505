"""Data-parallel training (chapter 7) on 1 and 2 workers: seconds per epoch, bytes all-reduced per step, efficiency.

Trains chapter 6's digits network with `neuralwiki.distributed.train_dp` in a gloo group of 1 worker and of 2
workers (one CPU core each, started by appendix E's `neuralwiki.launch.launch`), for a few network widths and
batch sizes (`bs`: the rows of one step, all workers together, as in chapter 6's `train`), from the same
initial weights on the same minibatches. Prints, for each: seconds per epoch (the slowest worker, between two
barriers, so process start-up is not counted), the bytes each worker all-reduces per step (parameters x element
size), the speed-up t1/t2 and the efficiency t1/(2 t2) (1.0 would be perfect). For reference it also times
chapter 6's `train` alone in this process (no group, no all-reduce), on one thread.

Timings are printed, never asserted. A wrong result is a failure: the 2-worker parameters must equal the
1-worker ones (float32: within 1e-4) and be identical on both workers; otherwise it prints WRONG and exits 1.
`--short` is the quick mode for CI. Needs scikit-learn (a dev dependency) for the data."""
import argparse, os, sys, time

import torch

from neuralwiki.core import arg_type, check_count
from neuralwiki.distributed import train_dp
from neuralwiki.launch import launch, timed
from neuralwiki.nn import CrossEntropy, mlp
from neuralwiki.training import digits, train

# (hidden neurons, minibatch size (None: all 1437 images), epochs per measurement)
CONFIGS = [(64, 32, 5), (64, 256, 20), (64, None, 40), (512, None, 20), (2048, None, 5)]
SHORT = [(64, 32, 1), (64, None, 8)]


positive_int = arg_type(int, lambda v: check_count('value', v, 1))  # argparse types from the library's own checks


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=positive_int, default=None, help='measure each this many times, keep the fastest '
                   '(default: 3; --short: 1)')
    p.add_argument('--short', action='store_true', help='two configurations, one or a few epochs: the quick check for CI')
    return p.parse_args(argv)


def measure(configs, x, y, a):
    "On every worker, for each configuration: seconds and CPU seconds per epoch (fastest run), the trained parameters."
    out = []
    for hidden, bs, epochs in configs:
        best, params = (float('inf'), 0.), None
        for _ in range(a.repeats):
            cpu = time.process_time()
            seconds, model = timed(train_dp, mlp([64, hidden, 10], seed=0), CrossEntropy(), x, y, epochs=epochs, bs=bs)
            best, params = min(best, (seconds, time.process_time() - cpu)), [p.clone() for p in model.parameters()]
        out.append(((best[0] / epochs, best[1] / epochs), params))
    return out


def one_process(hidden, bs, epochs, x, y, a):
    "Chapter 6's `train` in this process, no group: seconds per epoch, the fastest of `repeats`."
    best = float('inf')
    for _ in range(a.repeats):
        start = time.perf_counter()
        train(mlp([64, hidden, 10], seed=0), CrossEntropy(), x, y, epochs=epochs, bs=bs, progress=False)
        best = min(best, time.perf_counter() - start)
    return best / epochs


def main(argv=None):
    a = parse_args(argv)
    a.repeats = a.repeats or (1 if a.short else 3)
    configs = SHORT if a.short else CONFIGS
    torch.set_num_threads(1)
    x, y, _, _ = digits()
    print(f"torch {torch.__version__}, gloo on 127.0.0.1, {os.cpu_count()} CPU cores, one thread per worker; "
          f"chapter 6's digits ({len(x)} training images), float32; fastest of {a.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} (other programs slow the workers down: measure on a quiet machine)")
    runs = {n: launch(measure, configs, x, y, a, nproc=n, timeout=120) for n in (1, 2)}
    head = (f"{'network':>11} {'batch':>5} {'params':>7} {'bytes/step':>10} {'steps/epoch':>11} {'alone':>9} "
            f"{'1 worker':>9} {'2 workers':>9} {'speed-up':>8} {'efficiency':>10} {'CPU per worker, 1 -> 2':>22}")
    print(head + '\n' + '-' * len(head))
    wrong = []
    for i, (hidden, bs, epochs) in enumerate(configs):
        ((t1, c1), p1), ((t2, c2), p2), (_, p2b) = runs[1][0][i], runs[2][0][i], runs[2][1][i]
        n_params = sum(p.numel() for p in p1)
        bytes_per_step = sum(p.numel() * p.element_size() for p in p1)
        steps = -(-len(x) // (bs or len(x)))
        alone = one_process(hidden, bs, epochs, x, y, a)
        diff = max((p - q).abs().max().item() for p, q in zip(p1, p2))
        if diff > 1e-4 or not all(torch.equal(p, q) for p, q in zip(p2, p2b)):
            wrong.append(f"64-{hidden}-10, batch {bs or len(x)}: 2 workers differ from 1 by {diff:.2e}, "
                         f"or from each other")
        print(f"{f'64-{hidden}-10':>11} {bs or len(x):>5} {n_params:>7,} {bytes_per_step:>10,} {steps:>11} "
              f"{alone*1000:>6.1f} ms {t1*1000:>6.1f} ms {t2*1000:>6.1f} ms {t1/t2:>7.2f}x {t1/(2*t2):>10.2f} "
              f"{f'{c1*1000:.1f} -> {c2*1000:.1f} ms':>22}")
    print("alone: chapter 6's train, no group; 1 and 2 workers: train_dp in a gloo group; times are per epoch, wall clock;\n"
          "CPU per worker: the processor time each worker used (what it computed), the rest of the wall time it waited")
    if wrong:
        print('WRONG result: ' + '; '.join(wrong))
        sys.exit(1)
    print('results: the 2-worker parameters equal the 1-worker ones (within 1e-4, float32) and are identical on both workers')


if __name__ == '__main__': main()
