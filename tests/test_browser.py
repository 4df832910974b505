"""The widgets of `neuralwiki.widgets` in a real browser.

Voila serves `tests/widgets_demo.ipynb` (a quadratic fitter and a gradient-descent stepper) on 127.0.0.1 and
Debian's Chromium, driven by Playwright, uses them as a reader would: it moves the `a` slider with the keyboard
and presses Step. A second test opens a static HTML export, with no kernel, and checks the plots are there.

Needs `/usr/bin/chromium` (`apt-get install -y chromium`; never a Playwright browser download). Without it the
tests are skipped, except in CI (`CI=true`), where they fail. Screenshots go to `$NEURALWIKI_ARTIFACTS` or
`artifacts/` at the repository root. Run with `pytest -s` to see the measured slider->redraw latency.
"""
import base64, json, os, statistics, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path

import pytest

from _servers import CHROMIUM, FLAGS, free_port, playwright, stop, wait_listening

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT/'tests'/'widgets_demo.ipynb'
LOAD_TRIES, LOAD_TIMEOUT_MS = 3, 40_000 # Voila sometimes never connects a kernel: reload (see module notes)
MOVES = 20 # timed slider moves, after the first one

QUAD, STEPPER = '.neuralwiki-quadfitter', '.neuralwiki-gdstepper'


@pytest.fixture(scope='module')
def playwright_sync():
    with playwright() as p: yield p


@pytest.fixture(scope='module')
def artifacts():
    d = Path(os.environ.get('NEURALWIKI_ARTIFACTS') or ROOT/'artifacts')/'browser'
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def jupyter_env(tmp_path):
    "An environment whose Jupyter, IPython and matplotlib folders are empty temp folders."
    env = dict(os.environ)
    for var in 'JUPYTER_CONFIG_DIR JUPYTER_DATA_DIR JUPYTER_RUNTIME_DIR IPYTHONDIR MPLCONFIGDIR'.split():
        (tmp_path/var).mkdir()
        env[var] = str(tmp_path/var)
    env.pop('JUPYTER_PATH', None)
    return env


@contextmanager
def voila(notebook, env, log_path, timeout=60):
    "Serve `notebook` with Voila on a free port of 127.0.0.1; yield its URL; stop the server however we leave."
    port = free_port()
    cmd = [sys.executable, '-m', 'voila', notebook.name, '--no-browser', '--Voila.ip=127.0.0.1', f'--port={port}',
           '--Voila.port_retries=0'] # our port or none: never another server's
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(cmd, cwd=notebook.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True) # its kernels share its process group: stop ends them all
        try:
            wait_listening(proc, port, timeout, 'voila', log_path, poll=0.2)
            yield f'http://127.0.0.1:{port}/'
        finally: stop(proc)


@contextmanager
def browser(playwright, tmp_path):
    "A Chromium page in a fresh, empty profile."
    profile = tmp_path/'chromium-profile'
    profile.mkdir()
    ctx = playwright.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                        args=FLAGS, viewport={'width': 1500, 'height': 1100})
    try: yield ctx.pages[0] if ctx.pages else ctx.new_page()
    finally: ctx.close()


def _load(page, url, ready):
    "Open `url` and wait for the selectors in `ready`; reload (a new kernel) up to `LOAD_TRIES` times."
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    for attempt in range(1, LOAD_TRIES+1):
        page.goto(url, wait_until='commit') # Voila streams the page while the notebook runs
        try:
            for sel in ready: page.wait_for_selector(sel, state='visible', timeout=LOAD_TIMEOUT_MS)
            return attempt
        except PlaywrightTimeout:
            if attempt == LOAD_TRIES: raise
            print(f'voila page not ready after {LOAD_TIMEOUT_MS/1000:.0f}s (attempt {attempt}): reloading')


_IMG_BYTES = """async img => {
    const b = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let s = '';
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    return btoa(s);
}"""

def img_bytes(locator):
    "The bytes of the image an `<img>` shows, as the browser received them."
    return base64.b64decode(locator.evaluate(_IMG_BYTES))

# Records, in the page, the time of the last key press and of every change of the plot's `src`.
_WATCH = """img => {
    window.nw = {key: null, changes: []};
    document.addEventListener('keydown', () => { window.nw.key = performance.now(); }, true);
    new MutationObserver(() => window.nw.changes.push(performance.now()))
        .observe(img, {attributes: true, attributeFilter: ['src']});
}"""

def wait_for_bytes(locator, expected, timeout_s=10):
    "Wait (bounded) until the `<img>` shows exactly the bytes `expected`; fail with what it showed."
    from playwright.sync_api import Error as PlaywrightError
    deadline = time.monotonic() + timeout_s
    while True:
        try: got = img_bytes(locator)
        except PlaywrightError: got = b'' # the image was replaced while we read it: read again
        if got == expected: return
        assert time.monotonic() < deadline, f'the plot did not become the expected one within {timeout_s}s ({len(got)} bytes shown)'
        time.sleep(0.1)

def press_and_wait(page, handle, key, settle_ms=150, timeout_ms=10_000):
    "Press `key` on `handle`; wait until the plot changed and then stayed the same for `settle_ms`; return ms from key to last change."
    n = page.evaluate('window.nw.changes.length')
    handle.press(key)
    page.wait_for_function(f'window.nw.changes.length > {n} && '
                           f'performance.now() - window.nw.changes[window.nw.changes.length-1] > {settle_ms}',
                           timeout=timeout_ms)
    return page.evaluate('window.nw.changes[window.nw.changes.length-1] - window.nw.key')


def test_widgets_in_voila(playwright_sync, artifacts, jupyter_env, tmp_path):
    import torch
    from neuralwiki.loss import noisy_quadratic, quad, mae, quad_loss
    from neuralwiki.gd import gd_step
    from neuralwiki.explorer import loss_text
    from neuralwiki.widgets import QuadFitter, GDStepper
    x, y = noisy_quadratic()
    def quad_text(a): return loss_text('MAE', mae(quad(a, 1.1, 1.1, x), y))

    t0 = time.monotonic()
    with voila(DEMO, jupyter_env, tmp_path/'voila.log') as url, browser(playwright_sync, tmp_path) as page:
        quad_img, quad_loss_label = page.locator(f'{QUAD} img.neuralwiki-plot'), page.locator(f'{QUAD} .neuralwiki-loss')
        handle = page.locator(f'{QUAD} .widget-slider .noUi-handle').first
        readout = page.locator(f'{QUAD} .widget-slider .widget-readout').first
        step_loss = page.locator(f'{STEPPER} .neuralwiki-loss')
        loads = _load(page, url, [f'{QUAD} img.neuralwiki-plot[src]', f'{STEPPER} img.neuralwiki-plot[src]',
                                  f'{QUAD} .neuralwiki-loss', f'{STEPPER} .neuralwiki-loss'])
        page.screenshot(path=str(artifacts/'before.png'), full_page=True)
        assert quad_loss_label.inner_text() == quad_text(1.1) == 'MAE = 2.422'
        assert readout.inner_text() == '1.10'
        # the stepper's sliders say that they set the start, not where gradient descent is now
        labels = page.locator(f'{STEPPER} .widget-slider .widget-label')
        assert [labels.nth(i).inner_text() for i in range(3)] == ['start a', 'start b', 'start c']
        before = img_bytes(quad_img)
        assert before == QuadFitter().image.value # exactly the plot the kernel drew for the starting values

        # One key press moves `a` from 1.1 to 1.2: the plot and the loss are those of a=1.2.
        quad_img.evaluate(_WATCH)
        press_and_wait(page, handle, 'ArrowRight')
        assert readout.inner_text() == '1.20'
        assert quad_loss_label.inner_text() == quad_text(1.2)
        after = img_bytes(quad_img)
        assert after != before and after == QuadFitter(a=1.2).image.value

        # Latency: key press -> new plot on the page, over MOVES more moves.
        ms = [press_and_wait(page, handle, 'ArrowRight') for _ in range(MOVES)]
        a = round(1.2 + 0.1*MOVES, 10)
        assert readout.inner_text() == f'{a:.2f}'
        assert quad_loss_label.inner_text() == quad_text(a)
        assert img_bytes(quad_img) == QuadFitter(a=a).image.value
        print(f'\nslider->redraw median: {statistics.median(ms):.0f} ms over {len(ms)} moves '
              f'(min {min(ms):.0f}, max {max(ms):.0f}; page loads: {loads})')

        # Step on the stepper: one gd_step from a=b=c=1.1 with lr=0.01, and the loss goes down.
        start = step_loss.inner_text()
        step_img = page.locator(f'{STEPPER} img.neuralwiki-plot')
        step_before = img_bytes(step_img)
        page.locator(STEPPER).get_by_role('button', name='Step', exact=True).click()
        page.wait_for_function(f'document.querySelector("{STEPPER} .neuralwiki-loss").innerText !== {json.dumps(start)}',
                               timeout=10_000)
        p = torch.tensor([1.1, 1.1, 1.1]).requires_grad_()
        gd_step(p, lambda q: quad_loss(q, x, y), 0.01)
        assert step_loss.inner_text() == loss_text('MAE', quad_loss(p, x, y))
        assert float(step_loss.inner_text().split('=')[1]) < float(start.split('=')[1])
        stepped = GDStepper()
        stepped.raise_errors = True
        stepped.step() # the same step in this process: the page must show exactly its plot
        assert stepped.image.value != step_before
        wait_for_bytes(step_img, stepped.image.value)
        page.screenshot(path=str(artifacts/'after.png'), full_page=True)
    print(f'browser test: {time.monotonic() - t0:.1f} s')


def test_static_html_shows_plots(playwright_sync, artifacts, jupyter_env, tmp_path, monkeypatch):
    "Without a kernel (a static HTML export), the reader still sees each widget's plot for its starting values."
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from neuralwiki.widgets import QuadFitter, GDStepper
    nb = nbformat.read(DEMO, as_version=4)
    for k, v in jupyter_env.items():
        if k.startswith(('JUPYTER', 'IPYTHON', 'MPL')): monkeypatch.setenv(k, v) # the kernel's folders: temp ones
    NotebookClient(nb, timeout=120, kernel_name='python3', resources={'metadata': {'path': str(DEMO.parent)}}).execute()
    pngs = [base64.b64decode(o['data']['image/png']) for c in nb.cells for o in c.get('outputs', [])
            if 'image/png' in o.get('data', {})]
    assert pngs == [QuadFitter().image.value, GDStepper().image.value] # the saved outputs carry the plots
    nb.metadata.pop('widgets', None) # as on GitHub or a docs site: the outputs, without live widgets
    html, _ = HTMLExporter().from_notebook_node(nb)
    page_path = tmp_path/'static.html'
    page_path.write_text(html)
    with browser(playwright_sync, tmp_path) as page:
        page.route('http*://**', lambda route: route.abort()) # offline: no CDN
        page.goto(page_path.as_uri(), wait_until='load')
        sizes = page.eval_on_selector_all('.jp-OutputArea-output img', 'imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])')
        page.screenshot(path=str(artifacts/'static.png'), full_page=True)
    assert sizes == [[500, 350], [900, 350]]
