#!/usr/bin/env python3
"""Are the committed outputs what a fresh run gives? Re-executes each notebook as a reader would and compares text.

    .venv/bin/python .ci/outputs.py --check                       # every notebook in nbs/
    .venv/bin/python .ci/outputs.py --check nbs/03_loss.ipynb     # some
    .venv/bin/python .ci/outputs.py --check -j 1                  # one at a time (default: 2 in parallel)

Each notebook runs top to bottom in a fresh kernel (nbclient, kernel `python3` of this Python), in `nbs/`, WITHOUT
`IN_TEST` (as a reader runs it: full-length loops). For every code cell the text outputs (stream text, text/plain,
text/markdown) of the fresh run are compared with the committed ones, after normalising: trailing whitespace,
carriage-return overwrites (what a terminal shows), consecutive stream chunks merged, and nbdev_clean's removal of
` at 0x...` from reprs. Images are not compared. A cell with a line `# varies: <why>` in its source is skipped.

Numbers are compared as numbers. float32 sums come out in another order on another processor (AVX-512, AVX2, none:
try `ATEN_CPU_CAPABILITY=default`), so their last digits differ from machine to machine. Two lines that differ only
in their numbers match when every pair of numbers does: integers exactly, numbers with a point or an exponent
within a relative 1e-5 (`REL_TOL`), far below anything printed at a reader's precision. The rest of the text must
match exactly, and a different rounded value (2.42 against 2.43) or a new line still fails. The largest relative
difference allowed is printed per notebook and in all.

To refresh a notebook's outputs:
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace nbs/X.ipynb && .venv/bin/nbdev_clean --fname nbs/X.ipynb
"""
import argparse, math, os, re, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
VARIES = re.compile(r'^\s*#\s*varies:', re.M)
ANSI = re.compile(r'\x1b\[[0-9;]*m')
REPR_ID = re.compile(r'(<.*?)( at 0x[0-9a-fA-F]+)(>)') # exactly what nbdev_clean (clean_ids=True) removes
MIMES = ('text/plain', 'text/markdown')
REL_TOL = 1e-5
# What makes this machine compute as another processor does: torch's own kernels, MKL's, and the thread count.
PROCESSOR_ENV = ('ATEN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS', 'OMP_NUM_THREADS')
# A number as printed: optional sign, digits with an optional point and fraction (or a bare fraction), an exponent.
NUMBER = re.compile(r'(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w])')
MAX_CELLS_SHOWN = 25


def _text(v): return ''.join(v) if isinstance(v, list) else (v or '')

def first_line(s):
    lines = s.strip().splitlines() or ['']
    return lines[0] + (f' (and {len(lines) - 1} more lines)' if len(lines) > 1 else '')

def _norm(s):
    "What a reader sees of `s`: carriage returns overwrite their line, trailing whitespace and blank lines dropped."
    lines = [l.rsplit('\r', 1)[-1].rstrip() for l in s.replace('\r\n', '\n').split('\n')]
    while lines and not lines[-1]: lines.pop()
    return lines

def rendered(outputs):
    "The text outputs of one cell as (kind, line) pairs; kind is `stdout`, `stderr`, `text/plain`, `text/markdown`, `error`."
    items = []
    for o in outputs:
        t = o.get('output_type')
        if t == 'stream':
            name = o.get('name', 'stdout')
            if items and items[-1][0] == name: items[-1][1] += _text(o.get('text'))
            else: items.append([name, _text(o.get('text'))])
        elif t in ('execute_result', 'display_data'):
            for m in MIMES:
                if m in o.get('data', {}): items.append([m, _text(o['data'][m])])
        elif t == 'error': items.append(['error', f"{o.get('ename')}: {ANSI.sub('', _text(o.get('evalue')))}"])
    return [(kind, line) for kind, s in items for line in (_norm(REPR_ID.sub(r'\1\3', s)) or [''])]

def numbers_diff(a, b):
    """How far apart two output lines are: 0.0 when equal, the largest relative difference of their numbers when they
    differ only in numbers within `REL_TOL`, and None when they differ otherwise (other text, another count of
    numbers, an integer changed, a number off by more than `REL_TOL`)."""
    if a == b: return 0.0
    if NUMBER.sub('#', a) != NUMBER.sub('#', b): return None
    worst = 0.0
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        if x == y: continue
        if not any(ch in x + y for ch in '.eE'): return None  # integers (counts, sizes, steps) must be equal
        fx, fy = float(x), float(y)
        if fx == fy: continue  # 0.50 and 0.5, -0.0 and 0.0
        if not math.isclose(fx, fy, rel_tol=REL_TOL): return None
        worst = max(worst, abs(fx - fy) / max(abs(fx), abs(fy)))
    return worst

def compare(old, new):
    """Compare the committed `old` and the fresh `new` (from `rendered`): `(index of the first line that differs, or
    None, largest relative difference of numbers allowed)`."""
    worst = 0.0
    for n, ((ka, la), (kb, lb)) in enumerate(zip(old, new)):
        d = numbers_diff(la, lb) if ka == kb else None
        if d is None: return n, worst
        worst = max(worst, d)
    return (None if len(old) == len(new) else min(len(old), len(new))), worst

def first_difference(old, new, n):
    "Line `n` of the committed `old` and the fresh `new` (from `rendered`), as (committed, fresh) strings."
    def at(pairs):
        if n < len(pairs): return f'{pairs[n][0]}: {pairs[n][1]}'
        return '(no text output)' if not pairs else f'(nothing after line {n} of its text outputs)'
    return at(old), at(new)


def run_one(path, timeout):
    """Execute the notebook at `path` fresh; return (name, seconds, error, [(cell index, id, committed, fresh)], largest
    relative difference of numbers allowed)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    os.environ.pop('IN_TEST', None) # as a reader runs it
    committed = nbformat.read(path, as_version=4)
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    t0, error = time.monotonic(), None
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', allow_errors=False,
                            resources={'metadata': {'path': str(path.parent)}})
    log = tempfile.NamedTemporaryFile('w+', prefix=f'kernel-{path.stem}-', suffix='.log', delete=False)
    try: client.execute(stderr=log) # the kernel's own stderr (its start-up warnings): shown only if the run fails
    except CellExecutionError as e:
        failed = next(((i, o) for i, c in enumerate(nb.cells) if c.cell_type == 'code'
                       for o in c.get('outputs', []) if o.get('output_type') == 'error'), None)
        if failed: error = f"cell {failed[0]} (id {nb.cells[failed[0]].get('id', '?')}) raised " \
                           f"{failed[1].get('ename')}: {first_line(ANSI.sub('', _text(failed[1].get('evalue'))))}"
        else: error = ANSI.sub('', str(e)).strip().splitlines()[-1]
    except Exception as e: error = f'{type(e).__name__}: {e}'
    log.close()
    if error:
        lines = [l for l in Path(log.name).read_text().splitlines() if 'running over TCP without encryption' not in l]
        error += ''.join(f'\n    kernel stderr: {l}' for l in lines[-5:])
    os.unlink(log.name)
    secs = time.monotonic() - t0
    diffs, worst = [], 0.0
    for i, (old, new) in enumerate(zip(committed.cells, nb.cells)):
        if old.cell_type != 'code' or VARIES.search(old.source): continue
        a, b = rendered(old.get('outputs', [])), rendered(new.get('outputs', []))
        if error and not new.get('outputs') and i > 0: continue # not reached: the error says why
        n, d = compare(a, b)
        worst = max(worst, d)
        if n is not None: diffs.append((i, old.get('id', '?'), *first_difference(a, b, n)))
    return path.name, secs, error, diffs, worst


def short(s, n=150): return repr(s if len(s) <= n else s[:n] + '...')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--check', action='store_true', required=True, help='compare fresh text outputs with the committed ones')
    ap.add_argument('notebooks', nargs='*', type=Path, help='default: every notebook in nbs/')
    ap.add_argument('-j', '--jobs', type=int, default=2, help='notebooks run in parallel (default 2)')
    ap.add_argument('--timeout', type=int, default=600, help='seconds a cell may run (default 600)')
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or \
        sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    t0, bad, worst = time.monotonic(), [], 0.0
    env = ', '.join(f"{k}={os.environ.get(k, '(unset)')}" for k in PROCESSOR_ENV)
    print(f're-running {len(paths)} notebook(s) as a reader would (no IN_TEST), {args.jobs} at a time; {env}', flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, p, args.timeout) for p in paths]
        for f in futures:
            name, secs, error, diffs, d = f.result()
            ok, worst = not error and not diffs, max(worst, d)
            what = f'same text outputs (numbers within {d:.1e})' if ok else '; '.join(filter(None, [
                error and f'ERROR {error}', diffs and f'{len(diffs)} cell(s) differ from the committed outputs']))
            print(f"{'PASS' if ok else 'FAIL'} {name:28} {secs:6.1f} s  {what}", flush=True)
            for i, cid, old, new in diffs[:MAX_CELLS_SHOWN]:
                print(f'  cell {i} (id {cid}):\n    committed: {short(old)}\n    fresh:     {short(new)}')
            if len(diffs) > MAX_CELLS_SHOWN: print(f'  ... and {len(diffs) - MAX_CELLS_SHOWN} more cell(s)')
            if not ok: bad.append(name)
    print(f'outputs: {len(paths) - len(bad)} passed, {len(bad)} failed in {time.monotonic() - t0:.0f} s; '
          f'largest relative difference of numbers allowed {worst:.1e} (tolerance {REL_TOL:.0e})'
          + (f" ({', '.join(bad)}). Refresh: jupyter nbconvert --to notebook --execute --inplace nbs/X.ipynb && "
             f"nbdev_clean --fname nbs/X.ipynb; mark cells whose text legitimately varies with '# varies: <why>'" if bad else ''))
    return 1 if bad else 0


if __name__ == '__main__': sys.exit(main())
