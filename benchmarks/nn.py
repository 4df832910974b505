"""Train the digits MLP of chapter 6 twice, from the same initial weights on the same minibatches:
(a) with neuralwiki's hand-written backward pass (`train`, exactly as a reader calls it), (b) with torch.nn
layers, F.cross_entropy, autograd and torch.optim.SGD.
Prints the time per epoch and the final training loss of each, and their ratios.
Targets: hand-written within 1.1x of torch's time per epoch; final losses within 1%.
A wrong result (final losses more than 1% apart, or a non-finite loss) exits with status 1; a missed speed
target is printed, never a failure.
Needs scikit-learn (a dev dependency) for the data."""
import argparse, math, sys, time

import torch
import torch.nn.functional as F

from neuralwiki.core import arg_type, check_count, check_positive
from neuralwiki.nn import mlp, to_torch, CrossEntropy, cross_entropy
from neuralwiki.training import train, batches, digits, accuracy


positive_int = arg_type(int, lambda v: check_count('value', v, 1))  # argparse types from the library's own checks

positive_float = arg_type(float, lambda v: check_positive('value', v))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=positive_int, default=20, help='passes over the 1437 training digits (default: 20)')
    p.add_argument('--hidden', type=positive_int, default=64, help='hidden ReLU neurons (default: 64)')
    p.add_argument('--bs', type=positive_int, default=32, help='minibatch size (default: 32)')
    p.add_argument('--lr', type=positive_float, default=0.1, help='learning rate (default: 0.1)')
    p.add_argument('--seed', type=int, default=0, help='seed of the initial weights, the shuffle and the split (default: 0)')
    p.add_argument('--threads', type=positive_int, default=1, help='torch.set_num_threads for both runs (default: 1)')
    p.add_argument('--repeats', type=positive_int, default=5, help='train each way this many times; the fastest counts (default: 5)')
    return p.parse_args(argv)


def train_hand(sizes, x, y, a):
    "Chapter 6's network and loop: hand-written forward and backward, `p -= lr * p.grad`."
    model = mlp(sizes, seed=a.seed)
    start = time.perf_counter()
    train(model, CrossEntropy(), x, y, lr=a.lr, epochs=a.epochs, bs=a.bs, seed=a.seed, progress=False)
    return time.perf_counter() - start, model


def train_torch(sizes, x, y, a):
    "The same network as torch.nn layers (same initial weights), trained with autograd and torch.optim.SGD."
    model = to_torch(mlp(sizes, seed=a.seed))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    start = time.perf_counter()
    with torch.no_grad(): F.cross_entropy(model(x), y)  # as `train` does: one look at all the data first
    g = torch.Generator().manual_seed(a.seed)
    for _ in range(a.epochs):
        for idx in batches(len(x), a.bs, g):  # the same shuffle as `train`
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start, model


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    x_train, y_train, x_test, y_test = digits(seed=a.seed)
    sizes = [x_train.shape[1], a.hidden, 10]
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"digits: {len(x_train)} train / {len(x_test)} test; MLP {sizes}; {a.epochs} epochs, bs {a.bs}, "
          f"lr {a.lr}, seed {a.seed}; best of {a.repeats} runs each")
    hand_name, torch_name = 'hand-written', 'torch autograd'
    best, models = {hand_name: float('inf'), torch_name: float('inf')}, {}
    for _ in range(a.repeats):  # alternate, so both see the same machine load
        t, models[hand_name] = train_hand(sizes, x_train, y_train, a)
        best[hand_name] = min(best[hand_name], t)
        t, models[torch_name] = train_torch(sizes, x_train, y_train, a)
        best[torch_name] = min(best[torch_name], t)
    losses, w = {}, max(map(len, best))
    print(f"{'':{w}} {'time/epoch':>11} {'final loss':>11} {'test acc':>9}")
    for name, model in models.items():
        with torch.no_grad(): out_train, out_test = model(x_train), model(x_test)
        losses[name] = cross_entropy(out_train, y_train).item()
        print(f"{name:{w}} {best[name]/a.epochs*1000:8.2f} ms {losses[name]:11.6f} {accuracy(out_test, y_test):9.1%}")
    t_ratio = best[hand_name] / best[torch_name]
    l_ratio = losses[hand_name] / losses[torch_name]
    print(f"hand-written / torch: time {t_ratio:.2f}x (target <= 1.1x: {'met' if t_ratio <= 1.1 else 'NOT met'}), "
          f"final loss {l_ratio:.5f} (target within 1%: {'met' if abs(l_ratio-1) <= 0.01 else 'NOT met'})")
    if not all(math.isfinite(l) for l in losses.values()) or abs(l_ratio - 1) > 0.01:
        sys.exit(f"WRONG RESULT: the two networks should reach the same final loss, got {losses}")


if __name__ == '__main__': main()
