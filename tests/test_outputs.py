"""Static checks of the committed notebooks: what a reader sees on GitHub or the docs site, without a kernel.

Fast (reads JSON only). Each failure names the notebook, the cell (its index in the notebook, 0-based, and its id, as
the notebook's JSON holds it) and what is wrong:
- no output is a progress bar, an error or traceback, or a widget view without the PNG that shows it without a kernel;
- no text output prints a float at more precision than a reader reads: more than 6 significant digits and more than 4
  decimals (`3.174880266189575`; a tensor's own repr, `127.8587`, is fine). Print `f'{x:.4f}'` or a sentence; a cell
  whose digits are the lesson says so in a line `# digits: <why>`. (Those last digits also differ between processors.)
- no text output holds `{target=` (nbdev's Quarto-only show_doc link: use `neuralwiki.core.show_doc`) or a memory
  address (`0x7f...`);
- no markdown holds raw cloze syntax (`{{c1::`): chapters mark deletions in **bold** (appendix A may show the deck's
  syntax inside code);
- no code cell holds a markdown heading commented out (`# ## One step downhill`);
- no figure is wider than 9 inches at matplotlib's default 100 dpi (900 px);
- every chapter (`nbs/[0-9][0-9]_*.ipynb`, `nbs/[a-z]_*.ipynb`) has, right after its title, the Colab badge (cell id
  `nw-badge`, its URL built from settings.ini's user/repo/branch and the file name) and the install cell (`nw-install`).
Whether outputs are *stale* needs a kernel: `.ci/outputs.py --check`.
"""
import base64, configparser, re, struct
from pathlib import Path

import pytest

from _notebooks import load, names_from_hidden_cells, text, write_notebook
from neuralwiki.cards import ANKI_CLOZE as CLOZE

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
CHAPTERS = sorted({*NBS.glob('[0-9][0-9]_*.ipynb'), *NBS.glob('[a-z]_*.ipynb')})
CLOZE_APPENDIX = 'a_flashcards.ipynb' # explains the deck's Anki syntax: allowed there inside code spans/blocks only

MAX_FIGURE_PX = 900 # 9 inches at matplotlib's default dpi (100)
WIDGET = 'application/vnd.jupyter.widget-view+json'
PROGRESS = re.compile(r'\d+%\|')                  # tqdm's "  0%|          | 0/2000"
ADDRESS = re.compile(r'0x[0-9a-fA-F]{6,}')
COMMENTED_HEADING = re.compile(r'^#[ \t]+#{1,6}[ \t]+\S', re.M) # `# ## One step downhill`, not `#| hide` nor `# a comment`
FLOAT = re.compile(r'(?<![\w.])[-+]?(\d*)\.(\d+)(?:[eE][-+]?\d+)?(?!\w)')
DIGITS_ARE_THE_LESSON = re.compile(r'^\s*#\s*digits:', re.M)
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|^\w*Error: ', re.M)


def cells(path):
    "(index, cell, source) for each cell of the notebook at `path`."
    return [(i, c, text(c.get('source'))) for i, c in enumerate(load(path)['cells'])]

def where(path, i, cell, out=None):
    s = f"{path.relative_to(ROOT)} cell {i} (id {cell.get('id', '?')})"
    return s if out is None else f'{s} output {out}'

def short(s, n=100):
    s = ' '.join(s.split())
    return repr(s if len(s) <= n else s[:n] + '...')

def output_texts(o):
    "(kind, text) for each text an output holds: stream text and every text/* or other textual mime type."
    if o.get('output_type') == 'stream': yield f"stream {o.get('name')}", text(o.get('text'))
    for k, v in o.get('data', {}).items():
        if k.startswith('text/') or k.endswith(('+json', 'json')) and k != WIDGET and isinstance(v, (str, list)):
            yield k, text(v)

def png_width(b64):
    "Width in pixels of a base64 PNG (from its IHDR chunk)."
    raw = base64.b64decode(text(b64)[:100])
    return struct.unpack('>I', raw[16:20])[0]

def strip_code(md):
    "Markdown without fenced blocks and inline code spans."
    md = re.sub(r'(?ms)^\s*(```|~~~).*?^\s*\1', '', md)
    return re.sub(r'(`+).+?\1', '', md, flags=re.S)


def long_floats(t):
    "The floats in `t` printed with more than 6 significant digits and more than 4 decimals."
    return [m.group() for m in FLOAT.finditer(t) if len(m.group(2)) > 4 and len((m.group(1) + m.group(2)).lstrip('0')) > 6]


def output_problems(path):
    probs = []
    for i, c, src in cells(path):
        if c['cell_type'] == 'markdown':
            md = strip_code(src) if path.name == CLOZE_APPENDIX else src
            if CLOZE.search(md):
                line = next(l for l in md.splitlines() if CLOZE.search(l))
                probs.append(f'{where(path, i, c)}: raw cloze syntax in markdown (write deletions in **bold**): {short(line)}')
            continue
        if c['cell_type'] != 'code': continue
        m = COMMENTED_HEADING.search(src)
        if m: probs.append(f'{where(path, i, c)}: a markdown heading commented inside a code cell: '
                           f'{short(src[m.start():].splitlines()[0])} (make it a markdown cell)')
        for j, o in enumerate(c.get('outputs', [])):
            at, data = where(path, i, c, j), o.get('data', {})
            if o.get('output_type') == 'error':
                probs.append(f"{at}: an error output: {o.get('ename')}: {short(text(o.get('evalue')))}")
                continue
            texts = list(output_texts(o))
            bar = next((t for _, t in texts if PROGRESS.search(t)), None)
            if bar is not None:
                probs.append(f'{at}: a progress bar: {short(bar)} (pass progress=False)')
                continue
            if WIDGET in data and 'image/png' not in data:
                probs.append(f"{at}: a widget view without an image/png beside it (a reader without a kernel sees nothing; "
                             f"text/plain {short(text(data.get('text/plain')))})")
            for kind, t in texts:
                if kind == 'stream stderr' and TRACEBACK.search(t):
                    probs.append(f'{at}: a traceback on stderr: {short(t[TRACEBACK.search(t).start():])}')
                if '{target=' in t:
                    probs.append(f'{at}: {kind} holds Quarto-only `{{target=...}}` link syntax (use neuralwiki.core.show_doc): '
                                 f"{short(t[max(0, t.index('{target=') - 40):])}")
                longs = [] if DIGITS_ARE_THE_LESSON.search(src) or kind == WIDGET else long_floats(t)
                if longs: probs.append(f'{at}: {kind} prints {len(longs)} float(s) at more precision than a reader reads, '
                                       f"e.g. {longs[0]} (print f'{{x:.4f}}', or mark the cell '# digits: <why>')")
                a = ADDRESS.search(t)
                if a: probs.append(f'{at}: {kind} holds a memory address {a.group()}: {short(t[max(0, a.start() - 50):a.end() + 10])}')
            if 'image/png' in data:
                w = o.get('metadata', {}).get('image/png', {}).get('width') or png_width(data['image/png'])
                if w > MAX_FIGURE_PX:
                    probs.append(f'{at}: a figure {w} px wide, more than 9 inches at 100 dpi ({MAX_FIGURE_PX} px): '
                                 f'use figsize width <= 9')
    return probs


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_outputs(path):
    probs = output_problems(path)
    if probs: pytest.fail(f'{len(probs)} problem(s) in committed cells/outputs:\n' + '\n'.join(probs), pytrace=False)


def settings():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']


def badge_url(name):
    s = settings()
    return (f"https://colab.research.google.com/github/{s['user']}/{s['repo']}/blob/{s['branch']}/"
            f"{s.get('nbs_path', 'nbs')}/{name}")


def front_problems(path):
    cs, probs = cells(path), []
    title = next((k for k, (_, c, src) in enumerate(cs) if c['cell_type'] == 'markdown' and src.startswith('# ')), None)
    if title is None: return [f'{path.relative_to(ROOT)}: no markdown title cell (`# Title`)']
    if title != 0: probs.append(f'{path.relative_to(ROOT)}: the title is cell {title}, not the first cell')
    after = cs[title+1:title+3]
    ids = [c.get('id') for _, c, _ in after]
    if ids != ['nw-badge', 'nw-install']:
        probs.append(f'{path.relative_to(ROOT)}: the two cells after the title have ids {ids}, expected '
                     f"['nw-badge', 'nw-install'] (the Colab badge, then the install cell)")
    by_id = {c.get('id'): (i, c, src) for i, c, src in cs}
    if 'nw-badge' in by_id:
        i, c, src = by_id['nw-badge']
        url = badge_url(path.name)
        if c['cell_type'] != 'markdown': probs.append(f'{where(path, i, c)}: the badge cell is not markdown')
        if f']({url})' not in src or 'colab-badge.svg' not in src:
            probs.append(f'{where(path, i, c)}: the badge does not link {url} with the Colab badge image: {short(src)}')
    if 'nw-install' in by_id:
        i, c, src = by_id['nw-install']
        s = settings()
        if c['cell_type'] != 'code': probs.append(f'{where(path, i, c)}: the install cell is not code')
        if not re.search(r'try:\s*import neuralwiki\b', src) or 'except ImportError' not in src:
            probs.append(f'{where(path, i, c)}: the install cell must install only when `import neuralwiki` fails: {short(src)}')
        if not re.search(r'%pip install .*neuralwiki\[book\]', src):
            probs.append(f'{where(path, i, c)}: the install cell does not `%pip install` neuralwiki[book]: {short(src)}')
        git = re.search(r'git\+(https://\S+?)["\'\s]', src + ' ')
        if git and git.group(1).rstrip('/').removesuffix('.git') != f"https://github.com/{s['user']}/{s['repo']}":
            probs.append(f"{where(path, i, c)}: the install cell's repository {git.group(1)} is not settings.ini's "
                         f"https://github.com/{s['user']}/{s['repo']}")
    return probs


@pytest.mark.parametrize('path', CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_badge_and_install_cell(path):
    probs = front_problems(path)
    if probs: pytest.fail('\n'.join(probs), pytrace=False)


def test_found_the_book():
    names = [p.name for p in CHAPTERS]
    assert len(names) >= 10 and '01_matmul.ipynb' in names and 'b_exercises.ipynb' in names, names


# The checks must be able to fail: each rule on a made-up notebook.
def test_the_checks_catch_what_they_should(tmp_path, monkeypatch):
    png = base64.b64encode(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR' + struct.pack('>II', 1165, 352) + b'\x00' * 8).decode()
    def code(src, *outs): return {'cell_type': 'code', 'id': 'x', 'metadata': {}, 'source': src, 'outputs': list(outs)}
    nb = {'cells': [
        {'cell_type': 'markdown', 'id': 'm', 'metadata': {}, 'source': '> ReLU sets {{c1::negative}} values to zero.'},
        code('assert (abc.grad < 0).all()\n# ## One step downhill'),
        code('fit()', {'output_type': 'display_data', 'metadata': {},
                       'data': {WIDGET: {'model_id': 'a'}, 'text/plain': 'gradient descent:   0%|          | 0/2000'}}),
        code('w', {'output_type': 'display_data', 'metadata': {}, 'data': {WIDGET: {'model_id': 'b'}, 'text/plain': 'Stepper()'}}),
        code('1/0', {'output_type': 'error', 'ename': 'ZeroDivisionError', 'evalue': 'division by zero', 'traceback': []}),
        code('show_doc(f)', {'output_type': 'execute_result', 'metadata': {}, 'execution_count': None,
                             'data': {'text/markdown': '[source](x){target="_blank"}', 'text/plain': '<f at 0x7f3a2b1c9d80>'}}),
        code('loss', {'output_type': 'execute_result', 'metadata': {}, 'execution_count': None,
                      'data': {'text/plain': '(3.174880266189575, tensor([127.8587]), 0.00012345)'}}),
        code('# digits: float32 keeps about 7\n0.1 + 0.2', {'output_type': 'execute_result', 'metadata': {},
             'execution_count': None, 'data': {'text/plain': '0.30000000000000004'}}),
        code('plot()', {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': png, 'text/plain': 'Figure'}}),
    ]}
    p = write_notebook(tmp_path/'nbs'/'99_bad.ipynb', nb['cells'])
    monkeypatch.setitem(globals(), 'ROOT', tmp_path)
    probs = '\n'.join(output_problems(p))
    for want in ['cell 0 (id m): raw cloze', 'cell 1 (id x): a markdown heading', 'cell 2 (id x) output 0: a progress bar',
                 'cell 3 (id x) output 0: a widget view without', 'cell 4 (id x) output 0: an error output',
                 'Quarto-only', 'memory address 0x7f3a2b1c9d80', 'a figure 1165 px wide',
                 'cell 6 (id x) output 0: text/plain prints 1 float(s) at more precision than a reader reads, e.g. 3.174880266189575']:
        assert want in probs, (want, probs)
    assert 'cell 7' not in probs  # its digits are the lesson
    assert front_problems(p) == ['nbs/99_bad.ipynb: no markdown title cell (`# Title`)']


def picture_plumbing(name): return name.startswith(('draw_', 'plot_'))

@pytest.mark.parametrize('path', CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_visible_code_defines_what_it_uses(path):
    """On the docs site hidden cells are not shown: code a reader sees must not use a name that only a hidden cell
    defines (a picture's plumbing, `draw_*` and `plot_*`, may stay hidden: the reader needs the picture)."""
    found = names_from_hidden_cells(path.name, allowed=picture_plumbing)
    if found: pytest.fail(f'visible code uses names only hidden cells define: {found}', pytrace=False)


def test_hidden_names_are_caught(tmp_path, monkeypatch):
    import _notebooks
    def code(cid, src): return {'cell_type': 'code', 'id': cid, 'metadata': {}, 'source': src, 'outputs': []}
    nb = {'cells': [code('a', '#| hide\nfrom fastcore.test import test_eq\ng = 2\ndef draw_it(): pass'),
                    code('b', 'test_eq(g * 2, 4)\ndraw_it()\nh = later()'),
                    code('c', 'def later(): return g')]}
    write_notebook(tmp_path/'01_x.ipynb', nb['cells'])
    monkeypatch.setattr(_notebooks, 'NBS', tmp_path)
    assert sorted(names_from_hidden_cells('01_x.ipynb')) == ['cell b: draw_it', 'cell b: g', 'cell c: g']
    assert sorted(names_from_hidden_cells('01_x.ipynb', allowed=picture_plumbing)) == ['cell b: g', 'cell c: g']
