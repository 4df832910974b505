#!/usr/bin/env bash
# The book runs where readers run it: chapters 1-6 outside the repository, with only the wheel's [book] extra.
#   bash .ci/outside.sh                 # chapters 01-06
#   bash .ci/outside.sh 03_loss 05      # some chapters (file names or their number prefixes)
#   KEEP=1 bash .ci/outside.sh          # keep the temp folder (its path is printed)
# 1. build the wheel from this checkout (.venv/bin/pip wheel --no-deps);
# 2. a fresh venv in a temp folder: torch==2.13.0, then "<wheel>[book]" ipykernel nbclient (no nbdev, no repo on sys.path);
# 3. copy nbs/ to a temp folder outside the repository (no settings.ini above it) and execute each chapter there with
#    nbclient and a kernel from that venv, as a reader would (no IN_TEST); fail on any error, naming the cell.
# Needs only python3 with venv (PYTHON=... to choose another) and this repo's .venv (to build the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
t0=$(date +%s)
say() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
fail() { echo "OUTSIDE FAILED: $*" >&2; exit 1; }
# pip, with the local-index notices of this machine ("Location ... is ignored") left out of the log
quiet_pip() { "$@" >"$tmp/pip.log" 2>&1 && rc=0 || rc=$?; grep -v 'is ignored: it is neither a file nor a directory' "$tmp/pip.log" || true; return $rc; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/neuralwiki-outside.XXXXXX")
if [ -n "${KEEP:-}" ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
case "$tmp" in "$ROOT"/*) fail "the temp folder $tmp is inside the repository";; esac

say "the wheel"
.venv/bin/pip wheel -q --no-deps -w "$tmp/dist" . >"$tmp/wheel.log" 2>&1 || { cat "$tmp/wheel.log"; fail "building the wheel failed"; }
wheel=$(ls "$tmp"/dist/neuralwiki-*.whl)
echo "$wheel"

say "a fresh venv: torch, then the wheel's [book] extra and a kernel"
$PY -m venv "$tmp/venv"
V="$tmp/venv/bin"
quiet_pip "$V/pip" install -q torch==2.13.0
if $PY -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); m = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
sys.exit("Provides-Extra: book" not in z.read(m).decode().splitlines())' "$wheel"; then
  quiet_pip "$V/pip" install -q "$wheel[book]" ipykernel nbclient
else
  # Until settings.ini defines book_requirements: what the chapters need, by hand (this is not the [book] extra).
  echo "NOTE: the wheel has no [book] extra yet; installing matplotlib ipywidgets tqdm scikit-learn fastcore<2 by hand"
  quiet_pip "$V/pip" install -q "$wheel" matplotlib ipywidgets tqdm scikit-learn "fastcore<2" ipykernel nbclient
fi
"$V/pip" list 2>/dev/null | grep -iE '^(neuralwiki|torch|matplotlib|ipywidgets|tqdm|scikit-learn|fastcore|genanki|ipykernel|nbclient) ' | tr -s ' ' | paste -sd, -
if "$V/pip" show -q nbdev >/dev/null 2>&1; then fail "nbdev got installed in the reader's venv: something in [book] pulls it in"; fi

say "chapters 1-6, copied outside the repository"
mkdir -p "$tmp/reader" "$tmp/home"
cp -r nbs "$tmp/reader/nbs"
rm -rf "$tmp/reader/nbs/.ipynb_checkpoints"
selected=("$@")
env -i PATH="$V:/usr/local/bin:/usr/bin:/bin" HOME="$tmp/home" LANG=C.UTF-8 TMPDIR="$tmp" \
    JUPYTER_CONFIG_DIR="$tmp/home/jupyter-config" JUPYTER_DATA_DIR="$tmp/home/jupyter-data" \
    JUPYTER_RUNTIME_DIR="$tmp/home/jupyter-runtime" IPYTHONDIR="$tmp/home/ipython" MPLCONFIGDIR="$tmp/home/mpl" \
    NW_REPO="$ROOT" NW_SELECTED="${selected[*]:-}" \
    "$V/python" - "$tmp/reader/nbs" <<'PY'
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
PY
say "done: chapters ran outside the repository with only the wheel's extras"
