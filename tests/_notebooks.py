"""Reading the committed notebooks, for the tests: their JSON (no kernel, no nbformat), and their code cells run in
this process as a reader runs them (the chapters' pictures and stubs are tested on the chapters themselves)."""
import ast, builtins, json, linecache
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'


def text(v):
    "A notebook's text field (a cell's source, an output's text) as one string: it may be stored as a list of lines."
    return ''.join(v) if isinstance(v, list) else (v or '')


def source(cell): return text(cell.get('source'))


def load(path): return json.loads(path.read_text(encoding='utf-8'))


def write_notebook(path, cells):
    "Write a made-up notebook of `cells` (dicts, as in a notebook's JSON) at `path`, for a test of a check; return `path`."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'cells': list(cells), 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    return path


def _python(src):
    "A cell's source as plain Python: IPython's syntax (`%pip`, `!cmd`) translated, never run."
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(src)


def run_cells(path, *ids, ns=None):
    """Run the code cells `ids` of the notebook at `path` (all of them, top to bottom, when none are given) in the
    namespace `ns` (a new one by default), as a reader runs them; return the namespace. The install cell's `%pip` only
    runs when neuralwiki is missing."""
    cells = {c.get('id'): c for c in load(path)['cells'] if c['cell_type'] == 'code'}
    ns = {'__name__': '__chapter__'} if ns is None else ns
    for cid in ids or cells:
        code, where = _python(source(cells[cid])), f'<{path.name} cell {cid}>'
        linecache.cache[where] = (len(code), None, code.splitlines(True), where)  # as IPython does: show_doc reads it
        exec(compile(code, where, 'exec'), ns)
    return ns


def run_chapter(name:str) -> dict:
    "Run every code cell of `nbs/<name>` top to bottom in one namespace; return {cell id: the namespace after that cell}."
    import matplotlib.pyplot as plt
    path, ns, after = NBS/name, {'__name__': '__chapter__'}, {}
    for c in load(path)['cells']:
        if c['cell_type'] != 'code': continue
        run_cells(path, c['id'], ns=ns)
        after[c['id']] = dict(ns)
    plt.close('all')
    return after


def names_from_hidden_cells(name:str, allowed=lambda name: False) -> list:
    """Names that code a reader sees (cells without `#| hide`) uses, but that only a hidden cell defines: on the docs
    site, where hidden cells are not shown, that code would use a name it never defines. Imports count as defined
    wherever they are (the chapters import `test_eq` in a hidden cell); `allowed(name)` exempts a name."""
    visible_defs, hidden_defs, uses = set(dir(builtins)), set(), []
    for c in load(NBS/name)['cells']:
        if c['cell_type'] != 'code': continue
        src = source(c)
        nodes = list(ast.walk(ast.parse(_python(src))))
        imported = {(a.asname or a.name).split('.')[0] for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        defined = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} \
                  | {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.ExceptHandler)) and n.name} \
                  | {n.arg for n in nodes if isinstance(n, ast.arg)}
        visible_defs |= imported
        if src.lstrip().startswith('#| hide'): hidden_defs |= defined
        else:
            visible_defs |= defined
            uses += [(c['id'], n.id) for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return [f'cell {cid}: {n}' for cid, n in dict.fromkeys(uses) if n in hidden_defs and n not in visible_defs and not allowed(n)]
