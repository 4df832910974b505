#!/usr/bin/env python3
"""Run chapters 1-6 as a reader outside the repository would: called by .ci/outside.sh, with the Python of a fresh venv
that has only the wheel's [book] extra, ipykernel and nbclient.

    python .ci/outside_run.py NBS_COPY    # env: NW_REPO (the repository, which must not be used), NW_SELECTED (chapters)

First a probe kernel shows where neuralwiki comes from (the venv, never the repository) and that nbdev is not
importable; then each chapter runs top to bottom (no IN_TEST). A failure names the cell, and what it needed that only
the repository has. Exit 1 if any chapter fails.
"""
import json, os, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

nbs, repo = Path(sys.argv[1]), Path(os.environ['NW_REPO'])
os.chdir(nbs)
# The reader's kernel: this venv's Python, named explicitly (never a kernelspec found elsewhere on the machine).
spec = Path(os.environ['JUPYTER_DATA_DIR'])/'kernels'/'nw-reader'
spec.mkdir(parents=True)
(spec/'kernel.json').write_text(json.dumps({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                                            'display_name': 'reader', 'language': 'python'}))
ANSI = re.compile(r'\x1b\[[0-9;]*m')

def run(nb, **kw):
    NotebookClient(nb, timeout=600, kernel_name='nw-reader', resources={'metadata': {'path': str(nbs)}}).execute(
        stderr=open(os.devnull, 'w'), **kw)

# Where does the kernel get neuralwiki from? The venv, never the repository.
probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
    'import sys, neuralwiki, importlib.util\n'
    'print(sys.executable); print(neuralwiki.__file__); print(importlib.util.find_spec("nbdev") is not None)')])
t = time.monotonic()
run(probe)
print(f'a first kernel in the fresh venv: {time.monotonic() - t:.1f} s')
exe, where, has_nbdev = probe.cells[0].outputs[0]['text'].split()
print(f'kernel: {exe}\nneuralwiki from: {where}\nnbdev importable: {has_nbdev}')
assert Path(exe).parent == Path(sys.executable).parent, f'the kernel is not the venv: {exe}'
assert not Path(where).resolve().is_relative_to(repo), f'neuralwiki comes from the repository: {where}'
assert has_nbdev == 'False', 'nbdev is importable in the reader kernel'
assert not any((p/'settings.ini').exists() for p in [nbs, *nbs.parents]), 'a settings.ini is above the copied notebooks'

chapters = sorted(p for p in nbs.glob('0[1-6]_*.ipynb'))
sel = os.environ.get('NW_SELECTED', '').split()
if sel: chapters = [p for p in chapters if any(p.name.startswith(s) or p.stem == s for s in sel)]
assert chapters, 'no chapter 01-06 found'
REPO_ONLY = {'nbdev': 'nbdev (not in [book]: use neuralwiki.core.show_doc, fastcore.test)',
             'settings.ini': "settings.ini (only the repository has it)", 'execnb': 'execnb (comes with nbdev only)'}
bad, total = [], time.monotonic()
for p in chapters:
    nb = nbformat.read(p, as_version=4)
    t = time.monotonic()
    try:
        run(nb)
        print(f'PASS {p.name:28} {time.monotonic() - t:6.1f} s', flush=True)
    except CellExecutionError:
        i, c, o = next((i, c, o) for i, c in enumerate(nb.cells) if c.cell_type == 'code'
                       for o in c.get('outputs', []) if o.get('output_type') == 'error')
        msg = f"{o['ename']}: {ANSI.sub('', o['evalue']).strip().splitlines()[0] if o['evalue'].strip() else ''}"
        needs = [why for key, why in REPO_ONLY.items() if key in msg or key in c.source and 'Error' in o['ename']
                 and key in ''.join(o.get('traceback', []))]
        print(f'FAIL {p.name:28} {time.monotonic() - t:6.1f} s  cell {i} (id {c.get("id", "?")}) raised {msg}', flush=True)
        if needs: print(f'     needs something only the repository has: {"; ".join(needs)}')
        line = next((l for l in c.source.splitlines() if l.strip() and not l.startswith('#|')), '')
        print(f'     the cell: {line[:150]!r}')
        bad.append(p.name)
    except Exception as e:
        print(f'FAIL {p.name:28} {time.monotonic() - t:6.1f} s  {type(e).__name__}: {e}', flush=True)
        bad.append(p.name)
print(f'outside the repo: {len(chapters) - len(bad)} passed, {len(bad)} failed in {time.monotonic() - total:.0f} s'
      + (f' ({", ".join(bad)})' if bad else ''))
sys.exit(1 if bad else 0)
