"""Every ```python block of README.md runs as shown, pasted into a fresh Python interpreter.

Each block runs on its own, in a new `python` process started in an empty temporary folder (so nothing the
repository holds, and nothing an earlier block defined, can help it): a block that needs a name imports or
defines it. A block fails the test if it raises; its output is printed with `pytest -s`.
"""
import re, subprocess, sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1]/'README.md'
FENCE = re.compile(r'^```python[ \t]*\n(.*?)^```[ \t]*$', re.S | re.M)


def python_blocks(text):
    "The ```python blocks of a Markdown text, each as (line number, code)."
    return [(text.count('\n', 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding='utf-8'))


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3, f'README.md has {len(BLOCKS)} ```python blocks; the tour and the practice section have more'


def test_python_blocks_parse_the_fences():
    text = 'a\n```python\nx = 1\n```\ntext\n```sh\nls\n```\n```python\ny = 2\nprint(y)\n```\n'
    assert python_blocks(text) == [(2, 'x = 1\n'), (9, 'y = 2\nprint(y)\n')]


@pytest.mark.parametrize('line,code', BLOCKS, ids=[f'README.md:{line}' for line, _ in BLOCKS])
def test_readme_block_runs_in_a_fresh_interpreter(line, code, tmp_path):
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    print(f'--- README.md line {line}:\n{r.stdout}{r.stderr}')
    assert r.returncode == 0, f'the ```python block at README.md line {line} raised:\n{r.stderr}'
