#!/usr/bin/env python3
"""Which cells does nbdev's docs processor re-run on their own? Those that import and also compute.

`nbdev_proc_nbs` (the first half of `nbdev_docs`) re-executes, for the docs, each cell that has an import in it,
without the cells before it; a cell that imports and then uses a name defined earlier fails there, and nbdev's
warning does not name the notebook. This lists such cells: not exported, not `eval: false`, with an import and an
expression or assignment. Allowed: `nw-install` (the Colab install cell); the optional-import idiom
(`try: from numba import njit` / `except ImportError: njit = None`), which needs nothing from earlier cells; and
every cell of a notebook with nothing to document (no exports, no `show_doc`), which nbdev does not run at all.

    python .ci/mixed_cells.py            # every notebook in nbs/ (not _ or . files); exit 1 if any cell is listed
"""
import ast, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = {'export', 'exports', 'exporti', 'exec_doc'}


def _catches_import_error(handler):
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ('ImportError', 'ModuleNotFoundError') for n in names)


def has_docs(cells):
    "Does nbdev's docs processor run this notebook's cells at all? Only if some cell is exported or calls show_doc."
    return any(c.cell_type == 'code' and (set(re.findall(r'^#\|\s*(\w+)', c.source, re.M)) & EXPORTED
                                          or 'show_doc(' in c.source) for c in cells)


def mixed(source):
    "Does this code cell's source both import and compute (and is it not exported or `eval: false`)?"
    from IPython.core.inputtransformer2 import TransformerManager
    dirs = set(re.findall(r'^#\|\s*(\w+)', source, re.M))
    if dirs & EXPORTED or re.search(r'^#\|\s*eval:\s*false', source, re.M | re.I): return False
    try: tree = ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError: return False
    optional = {id(n) for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and _catches_import_error(h)
                for n in ast.walk(h)}
    nodes = [n for n in ast.walk(tree) if id(n) not in optional]
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes)


def mixed_cells(paths):
    "(notebook, cell index, id, first line) of every mixed cell."
    from execnb.nbio import read_nb
    out = []
    for fn in paths:
        cells = read_nb(fn).cells
        if not has_docs(cells): continue
        for i, c in enumerate(cells):
            if c.cell_type != 'code' or c.get('id') == 'nw-install' or not mixed(c.source): continue
            first = next((l for l in c.source.splitlines() if l.strip() and not l.startswith('#|')), '')
            out.append((Path(fn).name, i, c.get('id'), first))
    return out


if __name__ == '__main__':
    found = mixed_cells(sorted((ROOT/'nbs').glob('[!_.]*.ipynb')))
    for name, i, cid, first in found: print(f'  nbs/{name} cell {i} (id {cid}): imports mixed with code: {first}')
    sys.exit(1 if found else 0)
