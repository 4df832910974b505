"""The CI scripts in `.ci/` do what they say, on made-up inputs.

- `outputs.py` compares numbers as numbers: the last digits of a float32 sum may differ on another processor, a
  rounded value, a word or a line may not;
- `test_command.py` finds the README's test command and refuses one that would not run every test;
- `wheel_imports.py` follows module-level imports through the package, and only those;
- `mixed_cells.py` finds the cells nbdev's docs processor would re-run alone and fail on, and the book has none.
"""
import importlib.util
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parents[1]/'.ci'

def ci_script(name):
    "The script `.ci/<name>.py`, imported as a module (its `main` does not run)."
    spec = importlib.util.spec_from_file_location(f'ci_{name}', CI/f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

outputs = ci_script('outputs')


@pytest.mark.parametrize('committed,fresh,allowed', [
    ('step=0; loss=2.42', 'step=0; loss=2.42', 0.0),                                    # equal
    ('3.174880266189575', '3.1748805046081543', 7.5e-8),                                # off in the 8th digit
    ('(tensor([2.6156, 1.3363]), 0.9863442395067701)', '(tensor([2.6156, 1.3363]), 0.9863442120685489)', 2.8e-8),
    ('MAE 0.50, bias -0.0', 'MAE 0.5, bias 0.0', 0.0),                                   # the same values, written otherwise
    ('1e-05', '1.000001e-05', 1e-6),
])
def test_numbers_within_the_tolerance_match(committed, fresh, allowed):
    d = outputs.numbers_diff(committed, fresh)
    assert d == pytest.approx(allowed, rel=0.05, abs=1e-12)


@pytest.mark.parametrize('committed,fresh', [
    ('step=0; loss=2.42', 'step=0; loss=2.43'),        # off in the 3rd digit: a different rounded value
    ('tensor([2.6156, 1.3363])', 'tensor([2.6156, 1.3364])'),
    ('0.0001', '-0.0001'),                            # the sign
    ('MAE without ReLU: 3.17', 'MSE without ReLU: 3.17'),  # different words
    ('loss 2.42', 'loss: 2.42'),                       # other punctuation
    ('142 passed', '143 passed'),                      # integers are counts: exactly
    ('1234567 parameters', '1234568 parameters'),
    ('(2.42, 2.40)', '(2.42, 2.40, 2.36)'),            # another count of numbers
    ('float32', 'float64'),                            # digits inside a word are text
])
def test_real_changes_still_fail(committed, fresh):
    assert outputs.numbers_diff(committed, fresh) is None


def test_compare_whole_outputs():
    old = [('text/plain', 'loss 3.174880266189575'), ('stdout', 'step=0; loss=2.42')]
    assert outputs.compare(old, [('text/plain', 'loss 3.1748805046081543'), ('stdout', 'step=0; loss=2.42')]) \
        == (None, pytest.approx(7.5e-8, rel=0.05))
    assert outputs.compare(old, [('stdout', 'loss 3.174880266189575'), old[1]])[0] == 0   # another kind of output
    assert outputs.compare(old, old + [('stdout', 'step=1; loss=2.40')])[0] == 2          # a new line
    assert outputs.compare(old, old[:1])[0] == 1                                          # a line missing
    assert outputs.first_difference(old, old[:1], 1) == ('stdout: step=0; loss=2.42', '(nothing after line 1 of its text outputs)')


GOOD = 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/nbdev_test --timing && .venv/bin/pytest -s tests'

@pytest.mark.parametrize('readme,error', [
    (f'# x\n\n{GOOD}\n', None),
    ('# x\nno command here\n', 'found 0'),
    (f'{GOOD}\n{GOOD}\n', 'found 2'),
    (GOOD.replace(' --timing', ''), 'must run `.venv/bin/nbdev_test --timing`'),
    (GOOD.replace('pytest -s tests', 'pytest -s tests/test_readme.py'), 'must run `.venv/bin/pytest -s tests`'),
    ('python3 -m venv .venv && .venv/bin/pytest -s tests && .venv/bin/nbdev_test --timing', 'nbdev_test must come before pytest'),
])
def test_the_readme_test_command(readme, error):
    test_command = ci_script('test_command').test_command
    if error is None: assert test_command(readme) == GOOD
    else:
        with pytest.raises(ValueError, match=error.replace('[', r'\[').replace('.', r'\.').replace('`', '.')): test_command(readme)


def test_wheel_imports_follow_module_level_imports_only():
    w = ci_script('wheel_imports')
    src = 'import torch\nfrom .core import x\nfrom . import relu\nif True:\n    import numpy\ndef f():\n    import matplotlib\nclass C:\n    import tqdm\n'
    assert w.top_imports(src, 'neuralwiki.loss') == {'torch', 'neuralwiki.core', 'neuralwiki', 'neuralwiki.relu', 'numpy'}
    deps = {'neuralwiki.a': {'torch', 'neuralwiki.b'}, 'neuralwiki.b': {'genanki', 'json'}, 'neuralwiki.c': {'numpy', 'os'}}
    assert w.third_party(deps, 'neuralwiki.a') == {'genanki'}   # through neuralwiki.b
    assert w.third_party(deps, 'neuralwiki.c') == set()


@pytest.mark.parametrize('source,is_mixed', [
    ('import torch\nx = torch.ones(2)', True),
    ('from neuralwiki.loss import mae\nmae', True),
    ('import torch\nimport numpy as np', False),             # imports alone
    ('x = 1\nx + 1', False),                                 # no import
    ('#| export\nimport torch\nX = torch.ones(1)', False),   # exported: nbdev does not re-run it
    ('#| eval: false\nimport torch\ntorch.ones(1)', False),
    ('%pip install foo\nimport foo\nfoo.bar()', True),       # IPython syntax is understood
    ('try: from numba import njit\nexcept ImportError: njit = None', False),  # the optional import needs nothing
    ('try: import numba\nexcept ImportError: numba = None\nnumba.njit(f)', True),  # ...but code after it does
    ('try: import numba\nexcept ValueError: numba = None', True),
])
def test_mixed_cells(source, is_mixed):
    assert ci_script('mixed_cells').mixed(source) is is_mixed


def test_only_notebooks_with_docs_are_looked_at():
    from execnb.nbio import mk_cell
    has_docs = ci_script('mixed_cells').has_docs
    assert not has_docs([mk_cell('import torch\ntorch.ones(1)'), mk_cell('# show_doc( in prose', cell_type='markdown')])
    assert has_docs([mk_cell('#| export\ndef f(): pass')]) and has_docs([mk_cell('show_doc(f)')])


def test_the_book_has_no_cell_the_docs_processor_would_fail_on():
    "What CI's nbdev_proc_nbs step would trip on, found in a second here (the cells to split are named)."
    m = ci_script('mixed_cells')
    assert m.mixed_cells(sorted((CI.parent/'nbs').glob('[!_.]*.ipynb'))) == []
