#!/usr/bin/env python3
"""Make README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines cannot install).

The notebook is run with execnb (the engine nbdev_test uses), so README shows the tour's real output; cells
marked `#| hide` are dropped, nbdev directives are removed, links to chapters point into nbs/, and nbconvert
turns the result into Markdown.

    python .ci/readme.py           # write README.md
    python .ci/readme.py --check   # exit 1 if README.md is not what index.ipynb makes (for CI)
"""
import argparse, os, re, sys
from pathlib import Path

import nbformat
from execnb.nbio import read_nb, nb2str
from execnb.shell import CaptureShell
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent

def is_hidden(cell): return any(re.match(r'#\|\s*hide\s*$', l) for l in cell.source.splitlines())

def readme_text(nb_path=ROOT/'nbs'/'index.ipynb'):
    nb = read_nb(nb_path)
    cwd = os.getcwd()
    os.chdir(nb_path.parent)
    try: CaptureShell().run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    nb = nbformat.reads(nb2str(nb), as_version=4)
    nb.metadata['language_info'] = {'name': 'python'}
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and is_hidden(c))]
    for c in nb.cells:
        if c.cell_type == 'code': c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
        else: c.source = re.sub(r'\]\(((?:\d\d|[a-z])_[\w.-]+\.ipynb)\)', r'](nbs/\1)', c.source)
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    note = '<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n'
    return note + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true', help='fail if README.md is stale instead of writing it')
    args = p.parse_args()
    text, readme = readme_text(), ROOT/'README.md'
    if args.check:
        if readme.exists() and readme.read_text(encoding='utf-8') == text: print('README.md is current.'); return 0
        print('README.md is stale: run `python .ci/readme.py` and commit it.', file=sys.stderr); return 1
    tmp = readme.with_suffix('.md.tmp')
    tmp.write_text(text, encoding='utf-8'); os.replace(tmp, readme)
    print(f'wrote {readme}'); return 0

if __name__ == '__main__': sys.exit(main())
