"""Local servers and the browser for the browser tests (JupyterLab in test_jupyterlab.py, Voila in test_browser.py):
Chromium and Playwright or a skip (a failure in CI), a free port on 127.0.0.1, waiting until the server listens, and
stopping it with everything it started."""
import os, signal, socket, subprocess, time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get('NEURALWIKI_CHROMIUM', '/usr/bin/chromium')  # Debian's; never a Playwright download
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']


def require(ok, why):
    "Skip when `ok` is false, except in CI (`CI=true`), where the browser tests must run: fail there."
    if ok: return
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'{why}; CI=true, so this is a failure, not a skip')
    pytest.skip(why)


def playwright():
    "Playwright's sync API (use it as `with playwright() as p:`), once Chromium and the playwright package are found."
    require(Path(CHROMIUM).exists(), f'{CHROMIUM} not found: apt-get install -y chromium')
    try: from playwright.sync_api import sync_playwright
    except ImportError: require(False, 'the playwright Python package is not installed')
    return sync_playwright()


def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_listening(proc, port, timeout, name, log_path, poll=0.3):
    """Return once `proc` listens on `port` of 127.0.0.1; raise if it exits first (with the end of its log) or after
    `timeout` seconds. A TCP connect, not an HTTP GET: a GET of a notebook page would start a kernel."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f'{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}')
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline: raise TimeoutError(f'{name} did not listen within {timeout}s') from None
            time.sleep(poll)


def stop(proc, grace=15, interrupt=False):
    """End `proc` (started with `start_new_session=True`): two SIGINTs (Jupyter's clean shutdown) if `interrupt`,
    else SIGTERM; wait up to `grace` seconds; then kill what is left of its process group (kernels included)."""
    if proc.poll() is None:
        if interrupt: proc.send_signal(signal.SIGINT); time.sleep(0.3); proc.send_signal(signal.SIGINT)
        else: proc.terminate()
        try: proc.wait(grace)
        except subprocess.TimeoutExpired:
            if interrupt: proc.terminate()
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    proc.wait(5)
