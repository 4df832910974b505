"""`.ci/outputs.py` compares numbers as numbers: the last digits of a float32 sum may differ on another processor,
a rounded value, a word or a line may not."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location('ci_outputs', Path(__file__).resolve().parents[1]/'.ci'/'outputs.py')
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)


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
