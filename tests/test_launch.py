"""Appendix E's launcher (`neuralwiki.launch`), on the real engine: results come back by rank; every worker has its
own copy of the arguments and one thread; a failing worker ends the whole run with its error, within a bounded time,
never a hang (also under `torchrun`); a wrong setup is one line; and nothing is left behind (`_processes`).
"""
import os, signal, socket, subprocess, sys, time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist

from _processes import data, helper_process, net, new_marker, nothing_left_behind  # noqa: F401 (an autouse fixture)
from neuralwiki.distributed import shard, train_dp
from neuralwiki.launch import WorkerFailed, free_port, launch, timed
from neuralwiki.nn import CrossEntropy
from neuralwiki.training import batches

TIMEOUT = 30.  # the group's timeout in these tests: a failure must end the run well within it


def test_results_come_back_by_rank():
    assert launch(dist.get_rank, nproc=3) == [0, 1, 2]
    assert launch(dist.get_world_size, nproc=2) == [2, 2]


def add_rank(t):
    "In a worker: add rank + 1 to `t` in place, wait until every worker has, and say what this worker sees."
    t += dist.get_rank() + 1
    dist.barrier()
    return t.clone(), torch.get_num_threads()


def test_each_worker_has_its_own_copy_and_one_thread():
    "torch.multiprocessing would share a tensor's memory between processes: each worker must get its own copy."
    t = torch.zeros(3)
    (t0, threads0), (t1, threads1) = launch(add_rank, t, nproc=2)
    assert torch.equal(t0, torch.full((3,), 1.)) and torch.equal(t1, torch.full((3,), 2.))
    assert torch.equal(t, torch.zeros(3))  # and the caller's is untouched
    assert threads0 == threads1 == 1


def test_timed_counts_from_the_barrier():
    (s0, r0), (s1, r1) = launch(timed, time.sleep, 0.3, nproc=2)
    assert r0 is r1 is None
    assert 0.3 <= s0 < 5 and 0.3 <= s1 < 5, (s0, s1)


class FailingLoss(CrossEntropy):
    "Cross-entropy that, on one rank, raises (or hangs, or dies) in the backward pass of its second step."
    def __init__(self, rank=1, step=2, how='raise', stamp=None):
        self.rank, self.step, self.how, self.stamp, self.steps = rank, step, how, stamp, 0
    def backward(self):
        self.steps += 1
        if dist.get_rank() == self.rank and self.steps == self.step:
            if self.stamp: Path(self.stamp).write_text(repr(time.time()))  # when it failed: the bound counts from here
            if self.how == 'raise': raise RuntimeError(f'rank {self.rank} fails at step {self.step}')
            if self.how == 'hang': time.sleep(600)
            if self.how == 'die': os.kill(os.getpid(), signal.SIGKILL)
        return super().backward()


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
    assert 'FailingLoss' not in msg.splitlines()[0] and 'in backward' in msg  # the traceback follows the one line
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


def test_bad_data_on_one_worker_names_that_worker(request):
    "Appendix E's example: a nan pixel in worker 1's shard of the second minibatch ends the run at once, naming it."
    port = free_port()
    request.node.ports.append(port)
    x, y = data()
    second_batch = list(batches(96, 48, torch.Generator().manual_seed(0)))[1]  # train_dp's minibatches, seed 0
    x[shard(second_batch, 1, 2)[0], 5] = float('nan')
    start = time.monotonic()
    with pytest.raises(WorkerFailed) as e:
        launch(train_dp, net(), CrossEntropy(), x, y, lr=0.5, epochs=1, bs=48, nproc=2, timeout=TIMEOUT, port=port)
    assert e.value.args[0].splitlines()[0] == (
        'worker 1 of 2 failed: LossNotFinite: worker 1: the loss of its shard is nan: gradient descent stopped; '
        'try a smaller learning rate, and look for nan or inf in the data')
    assert time.monotonic() - start < TIMEOUT  # spawn saw worker 1 exit: worker 0 did not wait for the timeout


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
    with pytest.raises(ValueError) as e: launch(dist.get_rank, nproc=nproc)
    assert str(e.value) == f"nproc must be a whole number >= 1, got {nproc!r}"


FAILING_SCRIPT = '''
import sys, torch
import torch.distributed as dist
from _processes import data, net
from test_launch import FailingLoss
from neuralwiki.distributed import train_dp
dist.init_process_group('gloo', timeout=__import__('datetime').timedelta(seconds=float(sys.argv[1])))
x, y = data()
train_dp(net(), FailingLoss(), x, y, lr=0.5, epochs=2, bs=24)
'''

def test_torchrun_stops_every_worker_when_one_raises(request, tmp_path):
    mark = new_marker(request)
    script = tmp_path/'failing.py'
    script.write_text(FAILING_SCRIPT)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')])}
    start = time.monotonic()
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(script), mark], capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode != 0
    assert 'RuntimeError: rank 1 fails at step 2' in run.stderr, run.stderr[-3000:]
    assert time.monotonic() - start < float(mark)  # torchrun stopped worker 0: it did not wait for the timeout
