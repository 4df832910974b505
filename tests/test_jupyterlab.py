"""JupyterLab is the reader's main window: reading a chapter there must not dirty the clone, show raw cloze syntax,
or show an exercise's solution.

- `test_open_save_close_leaves_git_clean` (browser): copies the notebooks and settings.ini into a temporary git
  repository, starts JupyterLab there exactly as the README's book command does (its arguments; plus
  127.0.0.1, a free port, a token, isolated Jupyter/IPython/matplotlib folders), and in Debian's Chromium (Playwright)
  opens every notebook, waits for the kernel to be idle, checks that no raw `{{c1::` shows, saves with Ctrl+S (what
  autosave would do), checks the file was written, shuts the kernel down, closes the tab, and asserts
  `git status --porcelain nbs/` is empty. JupyterLab rewrites the kernelspec's display name and adds `language_info`
  when it opens a notebook, so this passes only when each save is nbdev-cleaned (settings.ini `jupyter_hooks = True`
  and JupyterLab started with nbdev's pre-save hook) and the committed files are in the form nbformat writes.
  Runs on a copy, never on the working tree: a save there could overwrite someone's edit.
  Needs `/usr/bin/chromium` (`apt-get install -y chromium`; `$NEURALWIKI_CHROMIUM` to use another): skipped locally
  without it, a failure in CI (`CI=true`). Screenshots go to `$NEURALWIKI_ARTIFACTS` or `artifacts/`.
  To try another book command before it is in the README: NEURALWIKI_BOOK_COMMAND='cd nbs && jupyter lab ...'.
- `test_saved_form` (static, fast): each notebook is byte for byte what JupyterLab + nbdev's hook would save.
- `test_no_solution_in_chapters` (static): chapters hold exercise stubs only; solutions live in appendix B.
"""
import ast, configparser, json, os, re, shlex, shutil, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path

import pytest

from _notebooks import source as _src, write_notebook
from _servers import CHROMIUM, FLAGS, free_port, playwright, stop, wait_listening
from neuralwiki.cards import ANKI_CLOZE as CLOZE

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
CHAPTERS = sorted({*NBS.glob('[0-9][0-9]_*.ipynb'), *NBS.glob('[a-z]_*.ipynb')})
SOLUTIONS_NB = 'b_exercises.ipynb'


def _cells(path): return json.loads(path.read_text(encoding='utf-8'))['cells']


# ---------------------------------------------------------------------------------------------------------------
# Static: no solution before the reader asks for it

def _is_stub(fn):
    "A function whose body is only a docstring, `...`, `pass` or `raise NotImplementedError`: a stub to fill in."
    for st in fn.body:
        if isinstance(st, ast.Pass): continue
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and (st.value.value is Ellipsis or
                                                                              isinstance(st.value.value, str)): continue
        if isinstance(st, ast.Raise) and 'NotImplementedError' in ast.unparse(st): continue
        return False
    return True


def _parse(src):
    "The cell's code as an AST, IPython magics and shell lines blanked; None if it still does not parse."
    code = '\n'.join('' if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines())
    try: return ast.parse(code)
    except SyntaxError: return None


def solution_problems(path):
    """Where the notebook at `path` shows a solution: a `solution_*` function; a `check(...)` whose `.passed` is
    asserted true (something that passes is there); or a `my_*` function given to `check` that is not a stub."""
    probs, defs, checked = [], {}, []
    for i, cell in enumerate(_cells(path)):
        if cell['cell_type'] != 'code': continue
        tree = _parse(_src(cell))
        if tree is None: continue
        at = f"{path.relative_to(ROOT)} cell {i} (id {cell.get('id', '?')})"
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(node.name, []).append((at, node))
                if node.name.startswith('solution'):
                    probs.append(f'{at}: defines {node.name}(), a solution (move it to appendix B, {SOLUTIONS_NB})')
            elif isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'check' and node.args:
                if isinstance(node.args[0], ast.Name): checked.append((at, node.args[0].id))
            # `assert check(...).passed`, `test_eq(check(...).passed, True)`
            if isinstance(node, (ast.Assert, ast.Call)):
                text = ast.unparse(node)
                if re.search(r'check\(.*\)\.passed', text) and not re.search(r'not\s+[\w.]*check\(|\.passed,\s*False', text) \
                        and (isinstance(node, ast.Assert) or re.search(r'\.passed,\s*True', text)):
                    probs.append(f'{at}: asserts that a function passes `check` ({text[:120]}): '
                                 f'a working solution is in the chapter (move it to appendix B)')
    for _, name in checked:
        if not name.startswith('my_'): continue
        for where, fn in defs.get(name, []):
            if not _is_stub(fn):
                probs.append(f'{where}: {name}() is given to check() but is not a stub (its body should be '
                             f'`...  # your code here`; the solution lives in appendix B)')
    return sorted(set(probs), key=probs.index)


BOOK = [p for p in CHAPTERS if not p.name.startswith('b_')]  # appendix B (b_check, b_exercises) may hold working answers

@pytest.mark.parametrize('path', BOOK, ids=[p.name for p in BOOK])
def test_no_solution_in_chapters(path):
    probs = solution_problems(path)
    if probs: pytest.fail('\n'.join(probs), pytrace=False)


def test_solution_check_can_fail(tmp_path, monkeypatch):
    def code(src): return {'cell_type': 'code', 'id': 'x', 'metadata': {}, 'outputs': [], 'source': src}
    nb = {'cells': [code('def my_relu(x):\n    "ReLU."\n    ...  # your code here\n\nr = check(my_relu)\nassert not r.passed'),
                    code('def my_mae(p, t): return (p - t).abs().mean()\ncheck(my_mae)'),
                    code('#| hide\ndef solution_dot(a, b): return (a*b).sum()\ntest_eq(check(solution_dot, "dot").passed, True)'),
                    code('assert check(lambda x: x, "relu").passed'),
                    code('test_eq(check(lambda x: x, "relu").passed, False)\n%timeit 1')]}
    p = write_notebook(tmp_path/'nbs'/'02_x.ipynb', nb['cells'])
    monkeypatch.setitem(globals(), 'ROOT', tmp_path)
    probs = solution_problems(p)
    assert len(probs) == 4, probs
    assert 'cell 1 (id x): my_mae() is given to check() but is not a stub' in probs[-1]
    assert any('cell 2 (id x): defines solution_dot()' in s for s in probs)
    assert sum('asserts that a function passes' in s for s in probs) == 2


# ---------------------------------------------------------------------------------------------------------------
# Static: the committed form is the form JupyterLab (with nbdev's pre-save hook) saves

def saved_by_jupyterlab(text):
    "What JupyterLab + nbdev's clean_jupyter hook write back for a notebook file holding `text`, opened and saved."
    import nbformat
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    nb = nbformat.reads(text, as_version=4)
    ks = nb.metadata.setdefault('kernelspec', {'name': 'python3', 'language': 'python'})
    ks['display_name'] = 'Python 3 (ipykernel)' # what JupyterLab does on opening ...
    nb.metadata['language_info'] = {'name': 'python', 'version': '3', 'mimetype': 'text/x-python'}
    cfg = get_config(path=ROOT) # ... and what nbdev's hook undoes (clean_jupyter's clean, without its side effects)
    clean_nb(nb, cfg.clear_all, cfg.get('allowed_metadata_keys').split(), cfg.get('allowed_cell_metadata_keys').split(),
             cfg.clean_ids)
    out = nbformat.writes(nb, version=nbformat.NO_CONVERT) # jupyter_server's FileContentsManager
    return out if out.endswith('\n') else out + '\n'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_saved_form(path):
    pytest.importorskip('nbdev')
    text = path.read_text(encoding='utf-8')
    saved = saved_by_jupyterlab(text)
    if saved != text:
        old, new = text.splitlines(), saved.splitlines()
        n = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        pytest.fail(f'{path.relative_to(ROOT)}: opening and saving it in JupyterLab (nbdev hook on) changes the file, '
                    f'first at line {n+1}:\n  file:  {old[n] if n < len(old) else "(end)"!r}\n  saved: '
                    f'{new[n] if n < len(new) else "(end)"!r}\nRewrite it in the form nbformat writes: '
                    f'.venv/bin/jupyter nbconvert --to notebook --inplace {path.relative_to(ROOT)} && '
                    f'.venv/bin/nbdev_clean --fname {path.relative_to(ROOT)} (the --execute workflow does this too)',
                    pytrace=False)


def test_jupyter_hooks_on():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    assert cfg['DEFAULT'].get('jupyter_hooks', '').strip().lower() == 'true', \
        'settings.ini must say jupyter_hooks = True (nbdev cleans every save from JupyterLab)'


# ---------------------------------------------------------------------------------------------------------------
# The browser test

def book_command():
    "The README's book command as (folder to cd into, relative to the repo, arguments after `jupyter lab`)."
    readme = (ROOT/'README.md').read_text(encoding='utf-8')
    if os.environ.get('NEURALWIKI_BOOK_COMMAND'): readme = os.environ['NEURALWIKI_BOOK_COMMAND'] # to try a candidate
    line = next((l for l in readme.splitlines() if re.search(r'\bjupyter[ -]lab\b', l) and not l.startswith('#')), None)
    assert line, 'README.md has no book command (a line running `jupyter lab`)'
    cwd, args = Path('.'), None
    for part in line.split('&&'):
        words = shlex.split(part)
        if words[:1] == ['cd']: cwd = cwd/words[1]
        elif any(w.endswith('jupyter') for w in words) and 'lab' in words:
            args = words[words.index('lab') + 1:]
        elif any(w.endswith('jupyter-lab') for w in words):
            args = words[[w.endswith('jupyter-lab') for w in words].index(True) + 1:]
    assert args is not None, f'no `jupyter lab` in the book command: {line}'
    return line, cwd, args


def _git(repo, *args):
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path):
    "A git repository holding the notebooks and settings.ini as they are in this working tree (committed there)."
    repo = tmp_path/'repo'
    repo.mkdir()
    shutil.copytree(NBS, repo/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '.last_checked', '_*'))
    for f in ['settings.ini', '.gitignore']: shutil.copy(ROOT/f, repo/f)
    _, cwd, args = book_command() # and any repository file the book command names (a --config=FILE, say)
    for a in args:
        for v in [a.split('=', 1)[-1], a]:
            if not v or os.path.isabs(v): continue
            src = (ROOT/cwd/v).resolve()
            if src.is_file() and src.is_relative_to(ROOT) and not src.is_relative_to(NBS):
                (repo/src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, repo/src.relative_to(ROOT))
    _git(repo, 'init', '-q')
    _git(repo, 'add', '-A')
    _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'book')
    return repo


@contextmanager
def jupyterlab(repo, tmp_path, log_path, timeout=90):
    "JupyterLab started as the README's book command does, in `repo`; yields (base URL, token, root folder)."
    line, cwd, args = book_command()
    env = dict(os.environ)
    for var in 'JUPYTER_CONFIG_DIR JUPYTER_DATA_DIR JUPYTER_RUNTIME_DIR IPYTHONDIR MPLCONFIGDIR'.split():
        (tmp_path/var).mkdir()
        env[var] = str(tmp_path/var)
    env.pop('JUPYTER_PATH', None); env.pop('IN_TEST', None)
    settings = tmp_path/'JUPYTER_CONFIG_DIR'/'lab'/'user-settings'/'@jupyterlab'
    for ext, name, value in [('apputils-extension', 'notification', {'fetchNews': 'false', 'checkForUpdates': False}),
                             ('notebook-extension', 'tracker', {'windowingMode': 'none'})]: # render every cell
        (settings/ext).mkdir(parents=True, exist_ok=True)
        (settings/ext/f'{name}.jupyterlab-settings').write_text(json.dumps(value))
    port, token = free_port(), os.urandom(12).hex()
    root = (repo/cwd).resolve()
    positional = [a for a in args if not a.startswith('-')] # `jupyter lab nbs/`: the folder it serves
    served = (root/positional[0]).resolve() if positional else root
    cmd = [sys.executable, '-m', 'jupyterlab', *args, '--no-browser', '--ServerApp.ip=127.0.0.1',
           f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
           '--LabApp.expose_app_in_browser=True'] + (['--allow-root'] if os.geteuid() == 0 else [])
    print(f'\nREADME book command: {line}\nstarted in {cwd}/ as: jupyter lab {shlex.join(cmd[3:])}')
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(proc, port, timeout, 'jupyter lab', log_path)
            yield f'http://127.0.0.1:{port}', token, served
        finally: stop(proc, interrupt=True)


_OPEN = """async path => {
    const app = window.jupyterapp;
    const w = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
    await w.context.ready;
    await w.sessionContext.ready;
    window.nw = w;
    app.shell.activateById(w.id);
    return w.id;
}"""
_IDLE = "() => window.nw && window.nw.sessionContext.session && window.nw.sessionContext.session.kernel && " \
        "window.nw.sessionContext.session.kernel.status === 'idle'"
_RENDERED = """() => {
    const w = window.nw, cells = w.content.widgets;
    return cells.length === w.model.cells.length &&
           cells.every(c => c.model.type !== 'markdown' || (c.rendered && c.node.querySelector('.jp-RenderedMarkdown')));
}"""
# The text a reader sees rendered from markdown (cells and text/markdown outputs); code spans and blocks left out in
# appendix A, which explains the deck's Anki syntax (code cells and plain-text outputs may show it anywhere).
_MARKDOWN_TEXT = """keepCode => Array.from(window.nw.content.node.querySelectorAll('.jp-RenderedMarkdown')).map(n => {
    const c = n.cloneNode(true);
    if (!keepCode) c.querySelectorAll('code, pre').forEach(e => e.remove());
    return c.textContent;
}).join('\\n')"""
_CLOSE = """async () => { const w = window.nw; await w.sessionContext.shutdown(); w.close(); window.nw = null; return true; }"""


def test_open_save_close_leaves_git_clean(clone, tmp_path):
    artifacts = Path(os.environ.get('NEURALWIKI_ARTIFACTS') or ROOT/'artifacts')/'jupyterlab'
    artifacts.mkdir(parents=True, exist_ok=True)
    assert _git(clone, 'status', '--porcelain') == ''
    problems, t0 = [], time.monotonic()
    with jupyterlab(clone, tmp_path, tmp_path/'lab.log') as (url, token, served), playwright() as pw:
        assert served == (clone/'nbs').resolve() or (clone/'nbs').resolve().is_relative_to(served), served
        prefix = '' if served == (clone/'nbs').resolve() else f"{(clone/'nbs').resolve().relative_to(served)}/"
        (tmp_path/'profile').mkdir()
        ctx = pw.chromium.launch_persistent_context(str(tmp_path/'profile'), executable_path=CHROMIUM, headless=True,
                                                    args=FLAGS, viewport={'width': 1400, 'height': 1000})
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(f'{url}/lab?token={token}', wait_until='load')
            page.wait_for_function('window.jupyterapp && window.jupyterapp.started !== undefined', timeout=60_000)
            page.evaluate('async () => { await window.jupyterapp.started; await window.jupyterapp.restored; }')
            for nb in NOTEBOOKS:
                t, path = time.monotonic(), clone/'nbs'/nb.name
                before = path.stat().st_mtime_ns
                page.evaluate(_OPEN, prefix + nb.name)
                page.wait_for_function(_IDLE, timeout=120_000, polling=200)
                page.wait_for_function(_RENDERED, timeout=60_000, polling=200)
                text = page.evaluate(_MARKDOWN_TEXT, nb.name != 'a_flashcards.ipynb')
                if CLOZE.search(text):
                    s = CLOZE.search(text).start()
                    problems.append(f'{nb.name}: raw cloze syntax shows in JupyterLab: {text[max(0, s-60):s+60]!r}')
                if nb.name.startswith('01_'): page.screenshot(path=str(artifacts/f'{nb.stem}.png'))
                page.keyboard.press('Control+s') # what autosave does, without waiting two minutes for it
                page.wait_for_function('() => !window.nw.context.model.dirty', timeout=30_000, polling=200)
                deadline = time.monotonic() + 10
                while path.stat().st_mtime_ns == before and time.monotonic() < deadline: time.sleep(0.1)
                saved = path.stat().st_mtime_ns != before
                page.evaluate(_CLOSE)
                time.sleep(0.3)
                status = _git(clone, 'status', '--porcelain', 'nbs/')
                verdict = 'clean' if saved and not status else ('NOT SAVED' if not saved else 'DIRTY')
                print(f'{nb.name:28} opened, kernel idle, saved, closed in {time.monotonic() - t:5.1f} s: git {verdict}')
                if not saved: problems.append(f'{nb.name}: Ctrl+S did not write the file (the test could not check a save)')
                if status:
                    diff = _git(clone, 'diff', '--stat', '--', f'nbs/{nb.name}').strip()
                    first = [l for l in _git(clone, 'diff', '-U0', '--', f'nbs/{nb.name}').splitlines()
                             if l[:1] in '+-' and not l.startswith(('+++', '---'))][:4]
                    problems.append(f'{nb.name}: opening and saving it in JupyterLab changed it: {status.strip()} '
                                    f'({diff.splitlines()[-1] if diff else ""}); first changed lines: {first}')
                    _git(clone, 'checkout', '-q', '--', 'nbs/') # start the next notebook from a clean tree
        finally: ctx.close()
    log = (tmp_path/'lab.log').read_text(errors='replace')
    hook_errors = [l for l in log.splitlines() if 'Pre-save hook' in l and 'failed' in l]
    print(f'JupyterLab: {len(NOTEBOOKS)} notebooks opened, saved and closed in {time.monotonic() - t0:.0f} s')
    if hook_errors: problems.append(f'the pre-save hook failed: {hook_errors[0]} (see the log of the server)')
    if problems:
        (artifacts/'lab.log').write_text(log)
        hints = [h for key, h in [
            ('display_name', 'kernelspec display_name / language_info changed: the book command runs JupyterLab without '
                             "a pre-save hook that cleans as nbdev_clean does (and settings.ini needs jupyter_hooks = True)"),
            ('"source": [', 'a "source" string became a list: the file is not in the form nbformat writes; refresh it '
                            'with jupyter nbconvert --to notebook --inplace, then nbdev_clean'),
            ('"max": ', 'widget-state numbers changed (10.0 -> 10): the browser re-serialises them; the pre-save hook '
                        "must keep the file's stored widget state when its values are equal")] if key in '\n'.join(problems)]
        pytest.fail(f'{len(problems)} problem(s) in JupyterLab:\n' + '\n'.join(problems) +
                    ''.join(f'\nhint: {h}' for h in hints), pytrace=False)
