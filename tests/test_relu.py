"""Chapter 2, `neuralwiki.relu`: ReLU against torch, the largest gap, one, two and N ReLUs, and the chapter's pictures.

The library's functions are tested directly. The chapter's own pictures and exercise stubs are tested on the chapter
itself: `run_chapter` runs its code cells top to bottom, as a reader does, and keeps the namespace after each cell.
"""
import math

import matplotlib
matplotlib.use('Agg')
import pytest
import torch
from fastcore.test import test_close as close, test_eq as eq, test_fail as fails, test_ne as ne  # not test_*: pytest would collect them

from neuralwiki.relu import double_relu, source_curve as f, interpolating_relus, largest_gap, rectified_linear, relu, sum_of_relus

from _notebooks import run_chapter


@pytest.fixture(scope='module')
def chapter(): return run_chapter('02_relu.ipynb')


def grid(n=100): return torch.linspace(-2, 2, n)


# --- ReLU from scratch -----------------------------------------------------------------------------------------------

def test_relu_by_hand():
    eq(relu(torch.tensor([-2., -0.5, 0., 0.5, 3.])), torch.tensor([0., 0., 0., 0.5, 3.]))
    eq(relu(torch.tensor([[-1, 2], [3, -4]])), torch.tensor([[0, 2], [3, 0]]))
    eq(relu(torch.tensor([-1, 2])).dtype, torch.int64)


def test_relu_refuses_what_is_not_a_tensor():
    fails(lambda: relu([-1., 2.]), contains='torch.Tensor, got list')
    fails(lambda: relu(-1.), contains='torch.tensor(...)')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_relu_is_torch_relu(dtype):
    "A thousand random numbers, every fifth exactly 0, some negative zeros, and the special values: as torch.relu."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=dtype)
    x[::5] = 0.
    x[1::50] = -0.
    x = torch.cat([x, torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)])
    assert (x == 0).sum() > 200 and (x < 0).sum() > 300
    assert torch.equal(relu(x[:-1]), torch.relu(x[:-1]))
    assert torch.isnan(relu(x[-1:])).all() and torch.isnan(torch.relu(x[-1:])).all()
    eq(relu(x).dtype, dtype)


def test_times_mask_is_not_relu():
    inf = torch.tensor([-math.inf])
    eq(relu(inf), torch.tensor([0.]))
    assert torch.isnan(inf * (inf > 0)).all()


def test_relu_picture(chapter):
    ns = chapter['b0c1de06']
    ax1, ax2, fig = ns['ax1'], ns['ax2'], ns['fig']
    close(ax1.lines[0].get_ydata(), torch.linspace(-3, 3, 100).clamp(min=0).numpy())
    eq([list(l.get_ydata()) for l in ax2.lines[:2]], [[0, 0], [1, 1]])
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in (ax1, ax2))
    assert fig.get_size_inches()[0] <= 9


# --- Piecewise linear ------------------------------------------------------------------------------------------------

def test_relu_is_not_linear():
    a, b = torch.tensor(1.), torch.tensor(-1.)
    eq(relu(a + b), torch.tensor(0.))
    eq(relu(a) + relu(b), torch.tensor(1.))
    ne(relu(a + b), relu(a) + relu(b))
    ne(relu(-1 * a), -1 * relu(a))


def test_linear_layers_collapse():
    g = torch.Generator().manual_seed(0)
    W1, W2, inputs = torch.randn(3, 5, generator=g), torch.randn(5, 2, generator=g), torch.randn(4, 3, generator=g)
    W = W1 @ W2
    eq(W.shape, (3, 2))
    close((inputs @ W1) @ W2, inputs @ W, eps=1e-5)


def test_relu_between_layers_is_abs(chapter):
    two_layers = chapter['29ed05f9']['two_layers']
    x = torch.tensor([[-2.], [-0.5], [0.], [1.5]])
    eq(two_layers(x), x.abs())
    eq(two_layers(-x), two_layers(x))
    assert not torch.equal(two_layers(-x), -two_layers(x))  # no single matrix gives that


# --- The largest gap -------------------------------------------------------------------------------------------------

def test_largest_gap_by_hand():
    eq(f(torch.tensor([-2., 0., 2.])), torch.tensor([9., 1., 17.]))
    eq(largest_gap(torch.zeros_like), (17.0, 2.0))
    gap, at = largest_gap(lambda x: torch.full_like(x, 9.))  # f is smallest, 2/3, at x = -1/3
    close(gap, 9 - 2/3, eps=1e-4); close(at, -1/3, eps=1e-3)
    eq(largest_gap(f), (0.0, -2.0))  # a perfect fit: no gap anywhere (the first point wins a tie)
    eq(largest_gap(torch.sin, torch.sin, 0., 1., n=2), (0.0, 0.0))
    eq(largest_gap(lambda x: x**2, torch.zeros_like, lo=-1., hi=3., n=5), (9.0, 3.0))


def test_largest_gap_refuses_a_bad_count():
    fails(lambda: largest_gap(f, n=1), contains='n must be a whole number >= 2')
    fails(lambda: largest_gap(f, n=2.5), contains='n must be')


# --- One ReLU ------------------------------------------------------------------------------------------------------

def test_rectified_linear_by_hand():
    eq(rectified_linear(2., -1., torch.tensor([-1., 0.5, 2.])), torch.tensor([0., 0., 3.]))
    eq(rectified_linear(-1., 1., torch.tensor([-2., 1., 3.])), torch.tensor([3., 0., 0.]))
    eq(rectified_linear(torch.tensor([[1.], [-1.]]), 0., torch.tensor([-2., 3.])), torch.tensor([[0., 3.], [2., 0.]]))
    fails(lambda: rectified_linear(2., -1., [1., 2.]), contains='x must be a torch.Tensor')


def test_one_relu_pictures(chapter):
    "relu(6x - 0.5) misses by 9 at the left end; relu(2x + 7) is the line 2x + 7 there, and misses by 6."
    ns = chapter['80ae3bd5']
    for ax, (m, b), (gap, at) in zip(ns['axs'], [(6, -0.5), (2, 7)], [(9.0, -2.0), (6.0, -2.0)]):
        eq(len(ax.lines), 3)
        close(ax.lines[1].get_ydata(), rectified_linear(m, b, grid()).numpy())
        close(ax.lines[0].get_ydata(), f(grid()).numpy())
        close(abs(ax.lines[2].get_ydata()[1] - ax.lines[2].get_ydata()[0]), gap, eps=1e-4)
        assert f'largest gap {gap:.2f} at x = {at:.2f}' in ax.get_title(), ax.get_title()
        assert ax.get_xlabel() and ax.get_ylabel()
        eq(largest_gap(lambda x, m=m, b=b: rectified_linear(m, b, x)), (gap, at))
    eq([ax.get_title().splitlines()[0] for ax in ns['axs']], ['relu(6x - 0.5)', 'relu(2x + 7)'])
    assert ns['fig'].get_size_inches()[0] <= 9


def test_one_relu_does_no_better_than_a_line(chapter):
    "The chapter's grid search finds relu(2x + 7); finer searches, and the argument, agree."
    ns = chapter['nw-one-relu-grid']
    close(ns['gaps'].min(), 6., eps=1e-4)
    eq(ns['gaps'].shape, (81, 81))
    i = ns['gaps'].argmin()
    eq((ns['m'].flatten()[i].item(), ns['b'].flatten()[i].item()), (2.0, 7.0))
    # its gap is 6 at both ends and in the middle: 3x^2 - 6 is +6, -6, +6 at x = -2, 0, 2
    close(f(torch.tensor([-2., 0., 2.])) - rectified_linear(2., 7., torch.tensor([-2., 0., 2.])), torch.tensor([6., -6., 6.]))
    # a finer grid of kinks inside [-2, 2]: rising ReLUs miss by >= 9 (at x = -2), falling ones by >= 17 (at x = 2)
    kinks, slopes = torch.linspace(-1.99, 1.99, 41), torch.linspace(0.25, 20, 80)
    m, k = torch.meshgrid(slopes, kinks, indexing='ij')
    xs = torch.linspace(-2, 2, 801)
    rising = (rectified_linear(m[..., None], -m[..., None]*k[..., None], xs) - f(xs)).abs().amax(-1)
    falling = (rectified_linear(-m[..., None], m[..., None]*k[..., None], xs) - f(xs)).abs().amax(-1)
    assert rising.min() >= 9 - 1e-4 and falling.min() >= 17 - 1e-4


def test_relu_explorer_draws_the_chapters_relu():
    from neuralwiki.widgets import ReluExplorer
    w = ReluExplorer()
    w.raise_errors = True
    w.sliders['m'].value = 6.0
    w.sliders['b'].value = -0.5
    w.draw()  # called directly too: ipywidgets would swallow an error inside a slider's callback
    close(w.line.get_ydata(), rectified_linear(6, -0.5, w.xs).numpy())


# --- Two ReLUs -----------------------------------------------------------------------------------------------------

def test_double_relu_by_hand():
    x = torch.tensor([-2., -1., -0.5, 0., 1.])
    eq(double_relu(-2., -2., 3., 0., x), torch.tensor([2., 0., 0., 0., 3.]))
    eq(double_relu(-2., -2., 3., 0., x), rectified_linear(-2., -2., x) + rectified_linear(3., 0., x))
    fails(lambda: double_relu(1., 1., 1., 1., 2.), contains='torch.Tensor, got float')


def test_two_relus_and_their_sum_picture(chapter):
    ns = chapter['b7695a1d']
    ax, fig = ns['ax'], ns['fig']
    eq([l.get_label() for l in ax.lines], ['relu(-2x - 2)', 'relu(3x)', 'their sum'])
    close(ax.lines[2].get_ydata(), ax.lines[0].get_ydata() + ax.lines[1].get_ydata())
    assert fig.get_size_inches()[0] <= 9 and ax.get_xlabel() and ax.get_ylabel()


def test_two_relus_against_f_pictures(chapter):
    "The left valley's right arm is too shallow (gap 5 at x = 2); the right one is steeper on a narrower floor (gap 2)."
    ns = chapter['b0c1de23']
    params = [(-7, -6, 6, 0), (-5, -2, 8, -1)]
    for ax, ps, gap in zip(ns['axs'], params, [5.0, 2.0]):
        close(ax.lines[1].get_ydata(), double_relu(*ps, grid()).numpy())
        close(largest_gap(lambda x, ps=ps: double_relu(*ps, x))[0], gap, eps=1e-3)
        assert f'largest gap {gap:.2f} at x = 2.00' in ax.get_title(), ax.get_title()
    floor = [-ps[3]/ps[2] - -ps[1]/ps[0] for ps in params]  # from the falling ReLU's kink to the rising one's
    assert floor[1] < floor[0]
    eq([ps[2] for ps in params], [6, 8])  # the right arms' slopes, as the text says
    eq(double_relu(*params[0], torch.tensor(2.)), 12.)
    eq([ax.get_title().splitlines()[0] for ax in ns['axs']], ['relu(-7x - 6) + relu(6x)', 'relu(-5x - 2) + relu(8x - 1)'])
    assert ns['fig'].get_size_inches()[0] <= 9


def test_double_relu_explorer():
    from neuralwiki.widgets import DoubleReluExplorer
    w = DoubleReluExplorer()
    w.raise_errors = True
    for name, v in zip(['m1', 'b1', 'm2', 'b2'], [-5., -2., 8., -1.]): w.sliders[name].value = v
    w.draw()
    close(w.line.get_ydata(), double_relu(-5, -2, 8, -1, w.xs).numpy())


# --- N ReLUs -------------------------------------------------------------------------------------------------------

def test_sum_of_relus_by_hand():
    pts = torch.tensor([-1., 0., 1., 2.])
    eq(sum_of_relus([1., 1.], [0., -1.], pts), torch.tensor([0., 0., 1., 3.]))
    eq(sum_of_relus([1., 1.], [0., -1.], pts, ws=[1., -2.]), torch.tensor([0., 0., 1., 0.]))
    eq(sum_of_relus([-2., 3.], [-2., 0.], pts), double_relu(-2., -2., 3., 0., pts))
    eq(sum_of_relus([], [], pts), torch.zeros(4))
    eq(sum_of_relus([1.], [0.], torch.ones(3, 5)).shape, (3, 5))


def test_sum_of_relus_is_the_loop(chapter):
    loop = chapter['f4784985']['sum_of_relus_loop']
    g = torch.Generator().manual_seed(0)
    ms, bs, ws = (torch.randn(7, generator=g) for _ in range(3))
    x = torch.randn(4, 5, generator=g)
    close(sum_of_relus(ms, bs, x, ws), loop(ms, bs, x, ws), eps=1e-5)
    close(sum_of_relus([ms[0], ms[1]], [1., 2.], x), loop(ms[:2], [1., 2.], x), eps=1e-5)  # a list holding tensors


def test_sum_of_relus_refuses_mismatches():
    pts = torch.tensor([-1., 0., 1., 2.])
    fails(lambda: sum_of_relus([1., 2., 3.], [0., 1.], pts), contains='ms has 3 entries, bs has 2')
    fails(lambda: sum_of_relus([1., 2.], [0., 1.], pts, ws=[1.]), contains='ws has 1')
    fails(lambda: sum_of_relus(torch.ones(2, 2), torch.ones(2), pts), contains='ms must be 1-D')
    fails(lambda: sum_of_relus([1.], [0.], [1., 2.]), contains='x must be a torch.Tensor')


def test_a_plain_sum_of_relus_is_convex_and_not_negative():
    g = torch.Generator().manual_seed(1)
    ms, bs = torch.randn(20, generator=g), torch.randn(20, generator=g)
    u, v = torch.randn(500, generator=g), torch.randn(500, generator=g)
    plain = lambda x: sum_of_relus(ms, bs, x)
    assert (plain((u + v)/2) <= (plain(u) + plain(v))/2 + 1e-5).all()  # never above its chords
    assert (plain(u) >= 0).all()


def test_interpolating_relus():
    ms, bs, ws = interpolating_relus(lambda x: x**2, torch.tensor([-1., 0., 1.]))
    eq(ms, torch.tensor([0., 1., 1.]))
    eq(bs, torch.tensor([1., 1., 0.]))
    eq(ws, torch.tensor([1., -1., 2.]))
    eq(sum_of_relus(ms, bs, torch.tensor([-1., -0.5, 0., 0.5, 1.]), ws), torch.tensor([1., 0.5, 0., 0.5, 1.]))
    knots = torch.linspace(-2, 2, 9)
    ms, bs, ws = interpolating_relus(f, knots)
    close(sum_of_relus(ms, bs, knots, ws), f(knots), eps=1e-5)
    fails(lambda: interpolating_relus(f, torch.tensor([0., 0., 1.])), contains='strictly increasing')
    fails(lambda: interpolating_relus(f, torch.tensor([0.])), contains='at least 2')


def test_the_error_bound(chapter):
    "Dots h apart miss f by exactly 3/4 h^2 (the h^2/8 max|f''| bound, met for a quadratic); the pictures show it."
    ns = chapter['74191a15']
    relu_approx, gaps = ns['relu_approx'], ns['gaps']
    eq(ns['ns'], [2, 3, 5, 9, 17])
    for n, gap in zip(ns['ns'], gaps): close(gap, 0.75 * (4/(n-1))**2, eps=1e-3)
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    pics = chapter['d42ab700']
    for ax, n, gap in zip(pics['axs'].flat, ns['ns'], gaps):
        assert ax.get_title().startswith(f'{n} ReLUs\nlargest gap {gap:.2f}') and '-0.00' not in ax.get_title()
        close(ax.lines[1].get_ydata(), relu_approx(f, n)(grid()).numpy(), eps=1e-4)
    assert pics['fig'].get_size_inches()[0] <= 9


def test_the_wave(chapter):
    ns = chapter['31d278d5']
    wave, relu_approx = ns['wave'], ns['relu_approx']
    wave_gaps = [largest_gap(relu_approx(wave, n), wave)[0] for n in [4, 8, 32]]
    assert wave_gaps[0] > wave_gaps[1] > wave_gaps[2]
    assert wave_gaps[2] <= (4/31)**2 / 8 * 18 + 1e-4  # h²/8 · max|wave''|, and |wave''| = 18|sin 3x| <= 18
    for ax, n, gap in zip(ns['axs'], [4, 8, 32], wave_gaps):
        eq(ax.get_title(), f'{n} ReLUs: largest gap {gap:.3f}')
        close(ax.lines[1].get_ydata(), relu_approx(wave, n)(grid()).numpy(), eps=1e-4)
        assert ax.get_xlabel() and ax.get_ylabel() and len(ax.get_legend().get_texts()) == 2
    assert ns['fig'].get_size_inches()[0] <= 9


# --- The exercises -------------------------------------------------------------------------------------------------

def test_exercise_stubs_fail_with_a_hint(chapter):
    "The chapter's stubs return nothing, and `check` says so; a right answer in the same cell passes."
    from neuralwiki.exercises import check
    r = check(chapter['64b88b59']['my_relu'])
    assert not r.passed and r.message.startswith('❌ relu(') and 'forget `return`' in r.message, r.message
    r = check(chapter['ebf3d679']['my_rectified_linear'])
    assert not r.passed and r.message.startswith('❌ rectified_linear(') and 'forget `return`' in r.message, r.message
    assert check(lambda x: torch.where(x <= 0, 0, x), 'relu').passed
    assert check(lambda m, b, x: (m*x + b).clamp(min=0), 'rectified_linear').passed
