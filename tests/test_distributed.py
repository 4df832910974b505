"""Chapter 7's failures, on the real engine: a failing worker ends the whole run with its error, within a bounded time,
never a hang; a wrong setup is one line; uneven data is handled; and nothing is left behind.

Each test starts real processes (`launch`, or `torchrun` through `python -m torch.distributed.run`). After every
test, passing or failing, the `nothing_left_behind` fixture checks that no process this test started is still alive
(children of pytest, and `torchrun`'s workers found by a marker in their command line) and that no port it used is
still listening; it kills what it finds, so one failure does not spill into the next test.
"""
import os, signal, socket, subprocess, sys, time, uuid
from pathlib import Path

import psutil
import pytest
import torch

from neuralwiki.distributed import WorkerFailed, free_port, launch, train_ddp, train_dp
from neuralwiki.nn import CrossEntropy, mlp
from neuralwiki.training import digits, train

import torch.distributed as dist

TIMEOUT = 30.  # the group's timeout in these tests: a failure must end the run well within it


def listening(port):
    "Whether something on this machine listens on TCP `port` (from /proc/net/tcp and tcp6: state 0A is LISTEN)."
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        if not os.path.exists(table): continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == '0A' and int(local.rsplit(':', 1)[1], 16) == port: return True
    return False


def helper_process(p):
    "multiprocessing's resource tracker lives as long as pytest does, by design: not a worker."
    try: return 'resource_tracker' in ' '.join(p.cmdline())
    except psutil.Error: return True


@pytest.fixture
def marker():
    "A token to put in a torchrun command line, to find its workers even after they are orphaned."
    return f'{47 + uuid.uuid4().int % 1000 / 1000:.3f}'


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    ports = []
    request.node.ports = ports
    yield
    deadline, left = time.monotonic() + 5, []
    while time.monotonic() < deadline:  # a process that was just stopped may take a moment to go
        left = [p for p in me.children(recursive=True) if p.pid not in before and not helper_process(p)]
        mark = getattr(request.node, 'marker', None)
        if mark: left += [p for p in psutil.process_iter() if _has(p, mark) and p.pid != me.pid]
        busy = [port for port in ports if listening(port)]
        if not left and not busy: return
        time.sleep(0.2)
    for p in left:
        try: p.kill()
        except psutil.Error: pass
    pytest.fail(f"left behind: processes {[p.pid for p in left]}, listening ports {busy}")


def _has(p, mark):
    try: return mark in ' '.join(p.cmdline())
    except psutil.Error: return False


def data(n=96):
    x, y, _, _ = digits()
    return x[:n].double(), y[:n]


def net(): return mlp([64, 16, 10], seed=0, dtype=torch.float64)


class FailingLoss(CrossEntropy):
    "Cross-entropy that, on one rank, raises (or hangs, or dies) in its second step: the failures to test."
    def __init__(self, rank=1, step=2, how='raise', stamp=None):
        self.rank, self.step, self.how, self.stamp, self.calls = rank, step, how, stamp, 0
    def forward(self, logits, labels):
        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.step:
            if self.stamp: Path(self.stamp).write_text(repr(time.time()))  # when it failed: the bound counts from here
            if self.how == 'raise': raise RuntimeError(f'rank {self.rank} fails at step {self.step}')
            if self.how == 'hang': time.sleep(600)
            if self.how == 'die': os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(logits, labels)


def run_failing(request, tmp_path, how, timeout=TIMEOUT):
    "Start 2 workers, one failing `how` at step 2: the error's message, and the seconds from the failure to the error."
    port, stamp = free_port(), tmp_path/'failed_at'
    request.node.ports.append(port)
    x, y = data()
    with pytest.raises(WorkerFailed) as e:
        launch(train_dp, net(), FailingLoss(how=how, stamp=stamp), x, y, lr=0.5, epochs=2, bs=24, nproc=2,
               timeout=timeout, port=port)
    return e.value.args[0], time.time() - float(stamp.read_text())


def test_a_worker_that_raises_fails_the_run_with_its_error(request, tmp_path):
    msg, seconds = run_failing(request, tmp_path, 'raise')
    assert msg.splitlines()[0] == 'worker 1 of 2 failed: RuntimeError: rank 1 fails at step 2'
    assert 'FailingLoss' not in msg.splitlines()[0] and 'in forward' in msg  # the traceback follows the one line
    assert seconds < TIMEOUT, f'{seconds:.1f} s: the run waited for the timeout instead of stopping at once'


def test_a_worker_that_hangs_is_ended_by_the_timeout(request, tmp_path):
    msg, seconds = run_failing(request, tmp_path, 'hang', timeout=3)
    assert msg.startswith('worker 0 of 2 failed: '), msg.splitlines()[0]   # rank 0 waited in the all-reduce ...
    assert 'Timed out' in msg.splitlines()[0], msg.splitlines()[0]          # ... and gave up after 3 s
    assert 3 <= seconds < TIMEOUT, seconds                                  # rank 1 (asleep) was stopped, not waited for


def test_a_worker_killed_outright_is_reported(request, tmp_path):
    msg, seconds = run_failing(request, tmp_path, 'die')
    assert msg.splitlines()[0] == 'worker 1 of 2 died: process 1 terminated with signal SIGKILL', msg
    assert seconds < TIMEOUT, seconds


def test_port_in_use_is_one_line_and_starts_nothing():
    x, y = data()
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0)); busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(OSError) as e: launch(train_dp, net(), CrossEntropy(), x, y, port=port)
    assert str(e.value) == (f"port {port} on 127.0.0.1 is in use: pass another port, "
                            "or port=None to let launch pick a free one")
    assert time.monotonic() - start < 1
    assert all(helper_process(p) for p in psutil.Process().children())  # no worker was started


@pytest.mark.parametrize('nproc', [0, -1, 1.5, True, '2'])
def test_wrong_nproc_is_one_line(nproc):
    x, y = data()
    with pytest.raises(ValueError) as e: launch(train_dp, net(), CrossEntropy(), x, y, nproc=nproc)
    assert str(e.value) == f"nproc must be a whole number >= 1, got {nproc!r}"


def test_a_batch_smaller_than_the_group_is_one_line(request):
    port = free_port()
    request.node.ports.append(port)
    x, y = data()
    with pytest.raises(WorkerFailed) as e: launch(train_dp, net(), CrossEntropy(), x, y, bs=5, nproc=2, port=port)
    # 96 rows in minibatches of 5: the last has 1 row, which two workers cannot share
    assert e.value.args[0].splitlines()[0].endswith(
        'ValueError: a batch of 1 examples cannot be shared by 2 workers: use fewer workers, '
        'or a batch size that leaves every worker at least one example'), e.value.args[0]


def test_uneven_data_is_handled_exactly_by_train_dp(request):
    "63 rows full-batch (shards 32 and 31) and minibatches of 32 over 95 rows (last 31: 16 and 15): as one process."
    x, y = data(95)
    for n, bs in ((63, None), (95, 32)):
        port = free_port()
        request.node.ports.append(port)
        workers = launch(train_dp, net(), CrossEntropy(), x[:n], y[:n], lr=0.5, epochs=3, bs=bs, nproc=2, port=port)
        alone = net()
        train(alone, CrossEntropy(), x[:n], y[:n], lr=0.5, epochs=3, bs=bs, progress=False)
        for w in workers:
            for p, q in zip(w.parameters(), alone.parameters()): torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_distributed_sampler_pads_uneven_data(request):
    "DDP's sampler repeats row 0 to give both workers 32 of 63 rows: the step of those 64 rows, not of the 63."
    port = free_port()
    request.node.ports.append(port)
    x, y = data(63)
    tm = launch(train_ddp, net(), x, y, lr=0.5, epochs=3, nproc=2, port=port)[0]
    ddp = [p.detach().T if p.ndim == 2 else p.detach() for p in tm.parameters()]
    padded, plain = net(), net()
    rows = torch.cat([torch.arange(63), torch.tensor([0])])
    train(padded, CrossEntropy(), x[rows], y[rows], lr=0.5, epochs=3, progress=False)
    train(plain, CrossEntropy(), x, y, lr=0.5, epochs=3, progress=False)
    for p, q in zip(ddp, padded.parameters()): torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert max((p - q).abs().max() for p, q in zip(ddp, plain.parameters())) > 1e-6


def torchrun(*args, nproc=2, timeout=180):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                           *args], capture_output=True, text=True, timeout=timeout)


def test_torchrun_prints_from_rank_0_and_matches_one_process(request, marker):
    request.node.marker = marker
    run = torchrun('-m', 'neuralwiki.distributed', '--epochs', '2', '--timeout', marker)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == '2 worker(s), minibatches of 32, lr 0.1' and len(lines) == 3, run.stdout  # rank 0 only
    x, y, _, _ = digits()
    history = train(mlp([64, 64, 10], seed=0), CrossEntropy(), x, y, lr=0.1, epochs=2, bs=32, progress=False)
    torch.testing.assert_close([float(l.split()[3]) for l in lines[1:]], history, rtol=0, atol=2e-6)


def test_help_explains():
    run = subprocess.run([sys.executable, '-m', 'neuralwiki.distributed', '--help'], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0
    assert 'torchrun --standalone --nproc_per_node=2 -m neuralwiki.distributed' in run.stdout
    assert 'all-reduced' in run.stdout and '--timeout' in run.stdout


def test_torchrun_wrong_option_is_one_line_from_rank_0(request, marker):
    request.node.marker = marker
    run = torchrun('-m', 'neuralwiki.distributed', '--bs', '1', '--epochs', '1', '--timeout', marker)
    assert run.returncode != 0
    ours = [l for l in run.stderr.splitlines() if l.startswith('error: ')]
    assert ours == ['error: a batch of 1 examples cannot be shared by 2 workers: use fewer workers, or a batch size '
                    'that leaves every worker at least one example'], run.stderr


FAILING_SCRIPT = '''
import sys, torch
import torch.distributed as dist
from test_distributed import FailingLoss, data, net
from neuralwiki.distributed import train_dp
dist.init_process_group('gloo', timeout=__import__('datetime').timedelta(seconds=float(sys.argv[1])))
x, y = data()
train_dp(net(), FailingLoss(), x, y, lr=0.5, epochs=2, bs=24)
'''

def test_torchrun_stops_every_worker_when_one_raises(request, tmp_path, marker):
    request.node.marker = marker
    script = tmp_path/'failing.py'
    script.write_text(FAILING_SCRIPT)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')])}
    start = time.monotonic()
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(script), marker], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode != 0
    assert 'RuntimeError: rank 1 fails at step 2' in run.stderr, run.stderr[-3000:]
    assert time.monotonic() - start < float(marker)  # torchrun stopped worker 0: it did not wait for the timeout
