"""Chapter 7's algorithm, on the real engine: the mean of the shards' gradients is the batch's gradient; `train_dp` and
`train_ddp` take the steps of chapter 6's `train`, on the same minibatches for the same `bs`; their inputs are checked
where they enter, as `train` checks them; and `main` under `torchrun` (or alone) prints rank 0's lines and matches
one process. The launcher's own tests (failures, timeouts, ports) are in test_launch.py.
"""
import datetime, subprocess, sys

import pytest
import torch
import torch.distributed as dist

from _processes import data, net, new_marker, nothing_left_behind  # noqa: F401 (an autouse fixture)
from neuralwiki.distributed import shard, train_ddp, train_dp
from neuralwiki.launch import WorkerFailed, free_port, launch
from neuralwiki.nn import CrossEntropy, cross_entropy, mlp
from neuralwiki.training import batches, digits, train


def close(ps, qs, atol=1e-12):
    for p, q in zip(ps, qs, strict=True): torch.testing.assert_close(p, q, rtol=0, atol=atol)


def ours(tm):
    "A `to_torch` network's parameters in chapter 6's layout (`torch.nn.Linear` keeps its weight transposed)."
    return [p.detach().T if p.ndim == 2 else p.detach() for p in tm.parameters()]


# --- shards and their gradients (no processes) ------------------------------------------------------------------
def test_shard_cuts_the_batch_into_consecutive_pieces():
    assert [shard(torch.arange(8), r, 2).tolist() for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [shard(torch.arange(7), r, 3).tolist() for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    for n in range(1, 12):
        for world_size in range(1, n + 1):
            pieces = [shard(order[:n], r, world_size) for r in range(world_size)]
            assert torch.equal(torch.cat(pieces), order[:n])                # every row once, in order
            sizes = [len(p) for p in pieces]
            assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1, (n, world_size, sizes)


def gradients(model, x, y):
    model.zero_grad()
    ce = CrossEntropy()
    ce(model(x), y)
    model.backward(ce.backward(), input_grad=False)
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize('world_size', [2, 3, 4])
def test_the_mean_of_equal_shards_gradients_is_the_batchs(world_size):
    x, y = data()
    model, rows = net(), torch.arange(len(x))
    whole = gradients(model, x, y)
    parts = [gradients(model, x[shard(rows, r, world_size)], y[shard(rows, r, world_size)]) for r in range(world_size)]
    close([sum(p[i] for p in parts) / world_size for i in range(len(whole))], whole, atol=1e-14)
    assert all((g - w).abs().max() > 1e-3 for g, w in zip(parts[0], whole))  # one shard alone is not enough


def test_uneven_shards_are_weighted_by_their_share():
    x, y = data(63)
    model, rows = net(), torch.arange(63)
    s0, s1 = shard(rows, 0, 2), shard(rows, 1, 2)
    whole, g0, g1 = gradients(model, x, y), gradients(model, x[s0], y[s0]), gradients(model, x[s1], y[s1])
    close([a * 32/63 + b * 31/63 for a, b in zip(g0, g1)], whole, atol=1e-14)
    assert max(((a + b) / 2 - w).abs().max() for a, b, w in zip(g0, g1, whole)) > 1e-5  # the plain mean is not


# --- a group of one, in this process: the inputs are checked where they enter -----------------------------------
@pytest.fixture
def group_of_one():
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1, timeout=datetime.timedelta(seconds=30))
    try: yield
    finally: dist.destroy_process_group()


def test_one_worker_is_train(group_of_one):
    x, y = data()
    for bs in (None, 32, 40):  # 96 rows in minibatches of 40: the last has 16
        alone = net()
        train(alone, CrossEntropy(), x, y, lr=0.5, epochs=3, bs=bs, progress=False)
        close(train_dp(net(), CrossEntropy(), x, y, lr=0.5, epochs=3, bs=bs).parameters(), alone.parameters())
        close(ours(train_ddp(net(), x, y, lr=0.5, epochs=3, bs=bs)), alone.parameters())


@pytest.mark.parametrize('kwargs, message', [
    (dict(lr=-1), "lr (the learning rate) must be a positive finite number, got -1"),
    (dict(lr=float('nan')), "lr (the learning rate) must be a positive finite number, got nan"),
    (dict(lr='0.1'), "lr (the learning rate) must be a positive finite number, got '0.1'"),
    (dict(epochs=-1), "epochs must be a whole number >= 0, got -1"),
    (dict(bs=0), "bs (the batch size) must be a whole number >= 1, got 0"),
    (dict(bs=2.5), "bs (the batch size) must be a whole number >= 1, got 2.5")])
def test_both_trainings_check_their_inputs_as_train_does(group_of_one, kwargs, message):
    x, y = data()
    with pytest.raises(ValueError) as e: train(net(), CrossEntropy(), x, y, progress=False, **kwargs)
    assert str(e.value) == message                                          # chapter 6's own words ...
    with pytest.raises(ValueError) as e: train_dp(net(), CrossEntropy(), x, y, **kwargs)
    assert str(e.value) == message                                          # ... in train_dp ...
    with pytest.raises(ValueError) as e: train_ddp(net(), x, y, **kwargs)
    assert str(e.value) == message                                          # ... and in train_ddp


def test_train_dp_checks_every_label_before_any_step(group_of_one):
    x, y = data()
    model, before = net(), [p.clone() for p in net().parameters()]
    y_bad = y.clone()
    y_bad[-1] = 10
    with pytest.raises(ValueError, match='labels'): train_dp(model, CrossEntropy(), x, y_bad, bs=8)
    close(model.parameters(), before, atol=0)                              # no step was taken


def test_train_dp_makes_nothing_on_the_default_device(group_of_one):
    "tests/test_device.py's inversion trap: CPU data while torch's default device is meta; the same numbers come out."
    x, y = data()
    expected = train_dp(net(), CrossEntropy(), x, y, lr=0.5, epochs=2, bs=32).parameters()
    with torch.device('meta'):
        trapped = train_dp(mlp([64, 16, 10], seed=0, dtype=torch.float64, device='cpu'), CrossEntropy(), x, y,
                           lr=0.5, epochs=2, bs=32).parameters()
    assert all(p.device.type == 'cpu' for p in trapped)
    close(trapped, expected, atol=0)


# --- two workers ------------------------------------------------------------------------------------------------
def run(request, fn, *args, nproc=2, **kwargs):
    port = free_port()
    request.node.ports.append(port)
    return launch(fn, *args, nproc=nproc, port=port, **kwargs)


def test_train_dp_on_two_workers_is_train(request):
    x, y = data()
    workers = run(request, train_dp, net(), CrossEntropy(), x, y, lr=0.5, epochs=10)
    alone = net()
    history = train(alone, CrossEntropy(), x, y, lr=0.5, epochs=10, progress=False)
    for w in workers: close(w.parameters(), alone.parameters())
    assert all(torch.equal(p, q) for p, q in zip(workers[0].parameters(), workers[1].parameters()))  # bit for bit
    assert history[-1] < history[0] / 2 and not torch.equal(workers[0].layers[0].w, net().layers[0].w)  # it trained


def test_uneven_data_is_handled_exactly_by_train_dp(request):
    "63 rows full-batch (shards 32 and 31) and minibatches of 32 over 95 rows (last 31: 16 and 15): as one process."
    x, y = data(95)
    for n, bs in ((63, None), (95, 32)):
        workers = run(request, train_dp, net(), CrossEntropy(), x[:n], y[:n], lr=0.5, epochs=3, bs=bs)
        alone = net()
        train(alone, CrossEntropy(), x[:n], y[:n], lr=0.5, epochs=3, bs=bs, progress=False)
        for w in workers: close(w.parameters(), alone.parameters())


class StepRows(CrossEntropy):
    "Cross-entropy that remembers the labels of every step's shard (`backward` runs once per step, after the check)."
    def __init__(self): self.seen = []
    def backward(self):
        self.seen.append(self.labels.tolist())
        return super().backward()


class LossRows:
    "`cross_entropy`, remembering the labels of every step's shard: `train_ddp`'s `loss_func`."
    def __init__(self): self.seen = []
    def __call__(self, pred, target):
        self.seen.append(target.tolist())
        return cross_entropy(pred, target)


def rows_of_each_step(bs, epochs=2):
    "In a worker: the rows each step of train_dp and of train_ddp gave this worker (every label is its row number)."
    x, _ = data()
    y = torch.arange(len(x))                          # 96 classes: a row's label is its number
    dp, ddp = StepRows(), LossRows()
    train_dp(mlp([64, 8, 96], seed=0, dtype=torch.float64), dp, x, y, epochs=epochs, bs=bs)
    train_ddp(mlp([64, 8, 96], seed=0, dtype=torch.float64), x, y, epochs=epochs, bs=bs, loss_func=ddp)
    return dp.seen, ddp.seen


@pytest.mark.parametrize('bs', [32, None])
def test_the_same_bs_gives_the_same_minibatches(request, bs):
    "`bs` is the rows of one step, all workers together, in both trainings: they take train's minibatches."
    (dp0, ddp0), (dp1, ddp1) = run(request, rows_of_each_step, bs)
    g = torch.Generator().manual_seed(0)
    expected = [sorted(idx.tolist()) for _ in range(2) for idx in batches(96, bs, g)]  # chapter 6's, two epochs
    assert len(expected) == (6 if bs else 2)
    assert [sorted(a + b) for a, b in zip(dp0, dp1, strict=True)] == expected
    assert [sorted(a + b) for a, b in zip(ddp0, ddp1, strict=True)] == expected
    assert {len(s) for s in dp0 + dp1 + ddp0 + ddp1} == {(bs or 96) // 2}  # each worker takes half of every step


def both_trainings(x, y, bs, seed):
    "In a worker: the parameters after train_dp and after train_ddp, both from the same network."
    dp = train_dp(net(), CrossEntropy(), x, y, lr=0.5, epochs=3, bs=bs, seed=seed)
    ddp = train_ddp(net(), x, y, lr=0.5, epochs=3, bs=bs, seed=seed)
    return list(dp.parameters()), ours(ddp)


def test_train_ddp_takes_train_dps_steps(request):
    x, y = data()
    for (dp, ddp) in run(request, both_trainings, x, y, 32, 0):
        alone = net()
        train(alone, CrossEntropy(), x, y, lr=0.5, epochs=3, bs=32, progress=False)
        close(dp, alone.parameters())
        close(ddp, alone.parameters())
    dp_other, _ = run(request, both_trainings, x, y, 32, 1)[0]  # another seed shuffles into other minibatches
    assert max((p - q).abs().max() for p, q in zip(dp_other, alone.parameters())) > 1e-3


def test_train_ddp_refuses_a_bs_the_workers_cannot_share(request):
    x, y = data()
    with pytest.raises(WorkerFailed) as e: run(request, train_ddp, net(), x, y, bs=33)
    assert e.value.args[0].splitlines()[0].split(' failed: ', 1)[1] == (
        'ValueError: bs (the batch size) must be a multiple of the 2 workers, got 33: each worker takes bs / 2 rows per step')


def test_a_batch_smaller_than_the_group_is_one_line(request):
    x, y = data()
    with pytest.raises(WorkerFailed) as e: run(request, train_dp, net(), CrossEntropy(), x, y, bs=5)
    # 96 rows in minibatches of 5: the last has 1 row, which two workers cannot share
    assert e.value.args[0].splitlines()[0].endswith(
        'ValueError: a batch of 1 examples cannot be shared by 2 workers: use fewer workers, '
        'or a batch size that leaves every worker at least one example'), e.value.args[0]


def test_distributed_sampler_pads_uneven_data(request):
    "DDP's sampler repeats row 0 to give both workers 32 of 63 rows: the step of those 64 rows, not of the 63."
    x, y = data(63)
    tm = run(request, train_ddp, net(), x, y, lr=0.5, epochs=3)[0]
    padded, plain = net(), net()
    rows = torch.cat([torch.arange(63), torch.tensor([0])])
    train(padded, CrossEntropy(), x[rows], y[rows], lr=0.5, epochs=3, progress=False)
    train(plain, CrossEntropy(), x, y, lr=0.5, epochs=3, progress=False)
    close(ours(tm), padded.parameters())
    assert max((p - q).abs().max() for p, q in zip(ours(tm), plain.parameters())) > 1e-6


# --- main, under torchrun and alone -----------------------------------------------------------------------------
def torchrun(*args, nproc=2, timeout=180):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                           *args], capture_output=True, text=True, timeout=timeout)


PRINTED = 5e-5 + 1e-6  # main prints losses with 4 decimals: half of the last digit, and float32's rounding


def one_process(epochs):
    x, y, _, _ = digits()
    return train(mlp([64, 64, 10], seed=0), CrossEntropy(), x, y, lr=0.1, epochs=epochs, bs=32, progress=False)


def test_torchrun_prints_from_rank_0_and_matches_one_process(request):
    run = torchrun('-m', 'neuralwiki.distributed', '--epochs', '2', '--timeout', new_marker(request))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == '2 worker(s), minibatches of 32, lr 0.1' and len(lines) == 3, run.stdout  # rank 0 only
    torch.testing.assert_close([float(l.split()[3]) for l in lines[1:]], one_process(2), rtol=0, atol=PRINTED)


def test_without_torchrun_main_trains_a_group_of_one():
    run = subprocess.run([sys.executable, '-m', 'neuralwiki.distributed', '--epochs', '1'], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == '1 worker(s), minibatches of 32, lr 0.1' and len(lines) == 2, run.stdout
    torch.testing.assert_close([float(lines[1].split()[3])], one_process(1), rtol=0, atol=PRINTED)


def test_help_explains():
    run = subprocess.run([sys.executable, '-m', 'neuralwiki.distributed', '--help'], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0
    assert 'torchrun --standalone --nproc_per_node=2 -m neuralwiki.distributed' in run.stdout
    assert 'all-reduced' in run.stdout and '--timeout' in run.stdout


def test_torchrun_wrong_option_is_one_line_from_rank_0(request):
    run = torchrun('-m', 'neuralwiki.distributed', '--bs', '1', '--epochs', '1', '--timeout', new_marker(request))
    assert run.returncode != 0
    ours_ = [l for l in run.stderr.splitlines() if l.startswith('error: ')]
    assert ours_ == ['error: a batch of 1 examples cannot be shared by 2 workers: use fewer workers, or a batch size '
                     'that leaves every worker at least one example'], run.stderr

