"""Process plumbing for the tests that start workers (test_launch.py, test_distributed.py): the data and network they
train, and a fixture that fails a test which leaves a process or a listening port behind.

`nothing_left_behind` (autouse where it is imported) checks after every test, passing or failing, that no process
the test started is still alive (children of pytest, and `torchrun`'s workers found by `new_marker` in their
command line) and that no port the test used (`request.node.ports`) still listens; it kills what it finds, so that one
failure does not spill into the next test.
"""
import os, time, uuid

import psutil
import pytest
import torch

from neuralwiki.nn import mlp
from neuralwiki.training import digits


def data(n=96):
    "The first `n` of chapter 6's training digits, in float64 (so that rounding cannot hide a wrong step)."
    x, y, _, _ = digits()
    return x[:n].double(), y[:n]


def net(): return mlp([64, 16, 10], seed=0, dtype=torch.float64)


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


def _has(p, mark):
    try: return mark in ' '.join(p.cmdline())
    except psutil.Error: return False


def new_marker(request):
    """A token to put in a torchrun command line, to find its workers even after they are orphaned: a number of
    seconds just above 47 (it is passed as the group's timeout), remembered for `nothing_left_behind`."""
    request.node.marker = f'{47 + uuid.uuid4().int % 1000 / 1000:.3f}'
    return request.node.marker


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    ports = []
    request.node.ports = ports
    yield
    deadline, left, busy = time.monotonic() + 5, [], []
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
