#!/usr/bin/env python3
"""The README's test command, as CI runs it: print it, or say what is wrong with it.

    python .ci/test_command.py               # print the command (exit 1, with the reason, if README.md has none)
    python .ci/test_command.py --notebooks   # how many notebooks nbdev_test runs (run with the project's venv)

The command is the one line of README.md that starts `python3 -m venv .venv && ` and runs the tests. Its commands
are split at `&&`; it must run `.venv/bin/nbdev_test --timing` (every notebook, each timed) before
`.venv/bin/pytest -s tests` (every test), each as one whole part.
"""
import argparse, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = 'python3 -m venv .venv && '
NEED = {'nbdev_test': '.venv/bin/nbdev_test --timing', 'pytest': '.venv/bin/pytest -s tests'}


def test_command(readme_text):
    "The README's test command, or raise ValueError saying what is wrong."
    lines = [l.strip() for l in readme_text.splitlines() if l.startswith(PREFIX)]
    tests = [l for l in lines if 'nbdev_test' in l or 'pytest' in l]
    if len(tests) != 1:
        raise ValueError(f"README.md must have one test command (a line starting `{PREFIX}` that runs the tests), "
                         f"found {len(tests)}")
    parts = [p.strip() for p in tests[0].split('&&')]
    for what, cmd in NEED.items():
        if cmd not in parts:
            got = [p for p in parts if what in p]
            raise ValueError(f"README.md's test command must run `{cmd}` (all of it, as one of its `&&` parts); "
                             f"it has {got or 'no ' + what}: {tests[0]}")
    if parts.index(NEED['nbdev_test']) > parts.index(NEED['pytest']): raise ValueError('README.md: nbdev_test must come before pytest')
    return tests[0]


def notebooks_tested():
    "How many notebooks `nbdev_test` runs: every one nbdev finds (this project keeps no `.notest` file to skip some)."
    from nbdev.doclinks import nbglob
    skipped = sorted(str(p.relative_to(ROOT)) for p in (ROOT/'nbs').rglob('.notest'))
    if skipped: raise ValueError(f"a .notest file makes nbdev_test skip the notebooks beside it: {skipped}")
    return len(nbglob(None, as_path=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--notebooks', action='store_true', help='print how many notebooks nbdev_test runs')
    args = ap.parse_args(argv)
    try: print(notebooks_tested() if args.notebooks else test_command((ROOT/'README.md').read_text(encoding='utf-8')))
    except ValueError as e: sys.exit(str(e))


if __name__ == '__main__': main()
