"""Chapter 3, `neuralwiki.loss`: the source's data bit for bit, MAE and MSE against PyTorch, the shapes they refuse,
the chapter's pictures and numbers, and its order: fit by eye first, the loss readout only once MAE is defined."""
import json, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastcore.test import test_close as close, test_eq as eq, test_fail as fails  # not test_*: pytest would collect them

from neuralwiki.loss import LOSSES, add_noise, mae, mk_quad, mse, noise, noisy_quadratic, quad, quad_loss
from neuralwiki.relu import source_curve as f
from _notebooks import run_chapter

# the chapter's bar chart hands torch tensors to matplotlib, which wraps them through numpy's __array_wrap__
pytestmark = pytest.mark.filterwarnings('ignore:__array_wrap__ must accept context:DeprecationWarning')

NB = Path(__file__).resolve().parents[1]/'nbs'/'03_loss.ipynb'


@pytest.fixture(scope='module')
def chapter(): return run_chapter('03_loss.ipynb')


@pytest.fixture(scope='module')
def data(): return noisy_quadratic()


def test_the_quadratic():
    eq(f(torch.tensor([0., 1., -1.])), torch.tensor([1., 6., 2.]))
    eq(f(2.0), 17.0)
    f2 = mk_quad(3, 2, 1)
    eq(f2(1.5), f(1.5))
    eq(f2(1.5), 3*1.5**2 + 2*1.5 + 1)
    eq(quad(1.5, -1., .5, torch.tensor(2.)), torch.tensor(4.5))


# --- the data ------------------------------------------------------------------------------------------------------

def source_data():
    "The source's data code, verbatim, with its global random state restored afterwards."
    def noise(x, scale): return np.random.normal(scale=scale, size=x.shape)
    def add_noise(x, mult, add): return x * (1+noise(x,mult)) + noise(x,add)
    state = np.random.get_state()
    try:
        np.random.seed(42)
        x = torch.linspace(-2, 2, steps=20)[:,None]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # a numpy array in torch arithmetic: __array_wrap__
            y = add_noise(f(x), 0.15, 1.5)
        return x, y
    finally: np.random.set_state(state)


def test_the_data_is_the_sources(data):
    x, y = data
    eq((x.shape, y.shape, y.dtype), ((20, 1), (20, 1), torch.float64))
    sx, sy = source_data()
    assert torch.equal(x, sx) and torch.equal(y, sy) and y.dtype == sy.dtype
    close(y[:3].flatten(), torch.tensor([11.869037, 6.543284, 5.939607], dtype=torch.float64), eps=1e-6)


def test_the_source_s_global_seed_gives_the_same_numbers(data):
    "`add_noise` without a generator draws from numpy's global one, as the source did."
    state = np.random.get_state()
    try:
        np.random.seed(42)
        assert torch.equal(add_noise(f(data[0]), 0.15, 1.5), data[1])
    finally: np.random.set_state(state)


def test_noisy_quadratic_leaves_numpy_alone(data):
    before = np.random.get_state()[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no warning either, even when warnings are errors
        x2, y2 = noisy_quadratic()
    eq(np.random.get_state()[1], before)
    assert torch.equal(y2, data[1])
    assert not torch.equal(noisy_quadratic(seed=0)[1], data[1])
    eq(noise(torch.zeros(3, 2), 0.1, np.random.RandomState(0)).shape, (3, 2))


def test_dtypes(data):
    x, y = data
    x32, y32 = noisy_quadratic(dtype=torch.float32)
    eq((x32.dtype, y32.dtype), (torch.float32, torch.float32))
    assert torch.equal(x32, x) and torch.equal(y32, y.float())  # the same numbers, rounded
    x64, y64 = noisy_quadratic(dtype=torch.float64)
    eq((x64.dtype, y64.dtype), (torch.float64, torch.float64))
    assert torch.equal(x64, x.double()) and torch.equal(y64, y)
    eq(noisy_quadratic(dtype=None)[1].dtype, torch.float64)


def test_the_data_picture(chapter):
    ax = chapter['0833bc0a']['ax']
    eq(len(ax.lines), 1)
    close(ax.lines[0].get_ydata(), f(torch.linspace(-2.1, 2.1, 100)).numpy().ravel())
    eq(len(ax.get_legend().get_texts()), 2)


# --- MAE and MSE ---------------------------------------------------------------------------------------------------

def test_mae_and_mse_by_hand():
    p, t = torch.tensor([1., 2., 4.]), torch.tensor([2., 2., 1.])
    eq(mae(p, t), torch.tensor((1+0+3)/3))
    eq(mse(p, t), torch.tensor((1+0+9)/3))
    eq(LOSSES, {'mae': mae, 'mse': mse})


def test_mae_and_mse_are_pytorchs(data):
    x, y = data
    for pred in (f(x).double(), mk_quad(1.1, 1.1, 1.1)(x)):
        close(mae(y, pred), F.l1_loss(y, pred.to(y.dtype)))
        close(mse(y, pred), F.mse_loss(y, pred.to(y.dtype)))


def test_the_residuals_picture_is_the_mae(chapter, data):
    ns = chapter['31d307ad']
    x, y = data
    close(mae(ns['guess'](x), y), ns['residuals'].abs().mean())  # the mean of the bars in the picture
    close(mae(ns['guess'](x), y), 2.4219, eps=1e-4)
    assert 'their mean: 2.42' in [t.get_text() for t in ns['ax2'].get_legend().get_texts()]


def test_the_losses_refuse_other_shapes(data):
    y = data[1]
    fails(lambda: mae(y, y.flatten()), contains='(20, 1)')
    fails(lambda: mae(y, y.flatten()), contains='(20,)')
    fails(lambda: mse(y.flatten(), y), contains='must match')
    fails(lambda: mae([1.], torch.tensor([1.])), contains='torch.Tensor')
    fails(lambda: mae(torch.tensor([]), torch.tensor([])), contains='empty')
    eq((y - y.flatten()).shape, (20, 20))  # the trap they refuse


# --- the loss of a quadratic, and its landscape ---------------------------------------------------------------------

def test_three_quadratics(data):
    "The guess, something in between, and the truth: the truth does not score best on this data."
    x, y = data
    at_guess, between, truth = [quad_loss(p, x, y) for p in ((1.1, 1.1, 1.1), (2, 1.5, 1), (3, 2, 1))]
    assert at_guess > truth > between > 0
    close(at_guess, 2.4219, eps=1e-4)
    close(truth, 1.4767, eps=1e-4)
    close(between, 1.3159, eps=1e-4)
    close(quad_loss((3, 2, 1), x, y, loss_func=mse), mse(f(x), y))


def test_the_landscape(chapter):
    ns = chapter['894c3771']
    best_a, maes, mses, a_s, loss_of_a = ns['best_a'], ns['maes'], ns['mses'], ns['a_s'], ns['loss_of_a']
    close(best_a, 2.57, eps=0.011)
    close(maes.min(), 1.083, eps=1e-3)
    close(loss_of_a(1.1), chapter['ca1923e7']['quad_loss']((1.1, 1.1, 1.1), *noisy_quadratic()))
    assert maes[0] > loss_of_a(1.1) > maes.min() and maes[-1] > maes.min()
    close(a_s[mses.argmin()], 2.56, eps=0.011)
    # MAE is made of straight pieces: its second difference vanishes away from the corners
    assert (maes[2:] - 2*maes[1:-1] + maes[:-2]).abs().median() < 1e-5


# --- the order of the chapter, and its exercises ----------------------------------------------------------------------

def test_by_eye_before_the_loss():
    "The first sliders show no loss and come before MAE is defined; the sliders with the readout come after."
    cells = json.loads(NB.read_text(encoding='utf-8'))['cells']
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    at = lambda test: next(i for i, s in enumerate(code) if test(s))
    by_eye, defined = at(lambda s: 'QuadFitter(' in s and 'import' not in s), at(lambda s: s.startswith('#| export\ndef mae('))
    with_loss = at(lambda s: s.strip() == 'QuadFitter()')
    assert code[by_eye].strip() == 'QuadFitter(loss=None)'
    assert by_eye < defined < with_loss


def test_exercise_stubs_fail_with_a_hint(chapter):
    "The chapter's stubs return nothing, and `check` says so; a right answer passes."
    from neuralwiki.exercises import check
    for name, stub in (('mae', 'ba6a5f3d'), ('mse', '4ebe24e6')):
        r = check(chapter[stub][f'my_{name}'])
        assert not r.passed and r.message.startswith(f'❌ {name}(') and 'forget `return`' in r.message, r.message
    assert check(lambda p, a: (p - a).abs().mean(), 'mae').passed
    assert check(lambda p, a: ((p - a)**2).mean(), 'mse').passed
