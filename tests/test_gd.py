"""Chapter 4, `neuralwiki.gd`: derivatives and gradients, the source's table and its bug, `gd_update`, `gd_step`, `fit`.

The chapter keeps one check per example; the batteries live here. Every number its prose quotes is asserted below
(the slope 8, the gradient at the guess, 0.021 per step, the swing between 1.07 and 2.46, 2.62/1.34/0.56 and 0.99,
1.48, the 2000-point fit), and so is every behaviour of the second edition's hidden cells.
"""
import contextlib, io, warnings
from functools import partial

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
from fastcore.test import test_close as close, test_eq as eq, test_fail as fails  # aliased: pytest collects test_*

import neuralwiki.gd as gd
from neuralwiki.core import plot_function
from neuralwiki.gd import SOURCE_TABLE, LossNotFinite, fit, gd_step, gd_update, loss_table
from neuralwiki.loss import mae, mk_quad, mse, noisy_quadratic, quad_loss
from neuralwiki.relu import source_curve as f, relu

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU here')
X, Y = noisy_quadratic()
QM = partial(quad_loss, x=X, target=Y)
QM_MSE = partial(quad_loss, x=X, target=Y, loss_func=mse)
GUESS = (1.1, 1.1, 1.1)


def guess(): return torch.tensor(GUESS).requires_grad_()
def slope(fn, x, h=1e-4): return (fn(x+h) - fn(x)) / h
def valley(a): return quad_loss((a, 1.1, 1.1), X, Y)
def loss_a_c(p): return quad_loss((p[0], 1.1, p[1]), X, Y)


def descend(loss_at, start, lr, steps):
    "The chapter's `descend`: gradient descent by hand, the points it visits."
    p = torch.tensor(start).requires_grad_()
    visited = [p.detach().clone()]
    for _ in range(steps):
        loss_at(p).backward()
        with torch.no_grad(): p -= lr * p.grad
        p.grad.zero_()
        visited.append(p.detach().clone())
    return torch.stack(visited)


def source_loop():
    "The source's loop, verbatim, with its own `quad_mae`: what it prints."
    x, y = X, Y
    def quad_mae(params):
        f = mk_quad(*params)
        return mae(f(x), y)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        abc = torch.Tensor([1.1, 1.1, 1.1])
        abc.requires_grad_()

        loss = quad_mae(abc)
        for i in range(10):
            loss = quad_mae(abc)
            loss.backward()
            with torch.no_grad(): abc -= abc.grad*0.01
            print(f'step={i}; loss={loss:.2f}')
    return printed.getvalue()


def first_steps(zero, steps=10, lr=0.01):
    "The chapter's `first_steps`: the a-entry of the gradient each step used, and the losses."
    p = guess()
    used, losses = [], []
    for _ in range(steps):
        if zero and p.grad is not None: p.grad.zero_()
        loss = QM(p)
        loss.backward()
        with torch.no_grad(): p -= p.grad*lr
        used.append(p.grad[0].item()); losses.append(loss.item())
    return torch.tensor(used), torch.tensor(losses)


# --- derivatives --------------------------------------------------------------------------------------------------
def test_slope_by_a_tiny_step():
    close(slope(f, 1.0), 8, eps=1e-3)
    close(slope(f, -2.0), -10, eps=1e-3)
    eq(round(slope(f, 1.0), 4), 8.0003)


def test_the_tangent_drawn():
    fig, ax = plt.subplots()
    plot_function(f, ax=ax)
    plot_function(lambda x: f(1.0) + 8*(x-1), ax=ax)
    close(ax.lines[1].get_ydata()[-1], f(1.0) + 8*(2.1-1), eps=1e-4)
    plt.close(fig)


def test_backward_is_the_derivative():
    xt = torch.tensor(1.0).requires_grad_()
    f(xt).backward()
    eq(xt.grad, torch.tensor(8.0))
    xs = torch.tensor([-2., 0., 1., 3.]).requires_grad_()
    f(xs).sum().backward()
    eq(xs.grad, torch.tensor([-10., 2., 8., 20.]))


def test_relu_slope_is_torchs():
    xr = torch.tensor([-2., -0.5, 0., 0.5, 2.]).requires_grad_()
    relu(xr).sum().backward()
    xt = xr.detach().clone().requires_grad_()
    torch.relu(xt).sum().backward()
    eq(xr.grad, xt.grad)
    eq(xr.grad, torch.tensor([0., 0., 0., 1., 1.]))
    # on many random inputs, with exact zeros among them
    r1 = torch.cat([torch.randn(1000, generator=torch.Generator().manual_seed(0)), torch.zeros(5)]).requires_grad_()
    r2 = r1.detach().clone().requires_grad_()
    relu(r1).sum().backward(); torch.relu(r2).sum().backward()
    eq(r1.grad, r2.grad)
    eq(r1.grad, (r1.detach() > 0).float())
    # the picture's grid: 0 left of 0, 1 right of it
    xr = torch.linspace(-2, 2, 401).requires_grad_()
    relu(xr).sum().backward()
    left, right = xr.detach() < 0, xr.detach() > 0
    eq(xr.grad[left].unique(), torch.tensor([0.])); eq(xr.grad[right].unique(), torch.tensor([1.]))


# --- the gradient -------------------------------------------------------------------------------------------------
def test_the_gradient_at_the_guess():
    abc = guess()
    loss = QM(abc)
    loss.backward()
    close(loss, 2.4219, eps=1e-4)
    close(abc.grad, torch.tensor([-1.3529, -0.0316, -0.5]), eps=1e-4)
    s = torch.sign(mk_quad(*GUESS)(X) - Y)
    close(abc.grad, torch.stack([(s*X**2).mean(), (s*X).mean(), s.mean()]).float(), eps=1e-6)  # by hand
    assert (abc.grad < 0).all()
    a = torch.tensor(1.1).requires_grad_()
    valley(a).backward()
    close(a.grad, abc.grad[0])   # the slope of chapter 3's valley is the first entry of the gradient
    with torch.no_grad(): abc -= abc.grad * 0.01
    close(QM(abc), 2.4010, eps=1e-4)   # one step lowers the loss
    assert QM(abc) < loss


def test_the_contour_picture():
    "The arrow is the gradient in (a, c) at the guess; 40 steps of lr=0.2 come down to the bottom of the map."
    p = torch.tensor([1.1, 1.1]).requires_grad_()
    loss_a_c(p).backward()
    close(p.grad, torch.tensor([-1.3529, -0.5]), eps=1e-4)
    path = descend(loss_a_c, [1.1, 1.1], lr=0.2, steps=40)
    close(path[1] - path[0], -0.2 * p.grad, eps=1e-6)   # the green arrow is the first step
    close(loss_a_c(path[-1]), 1.0000, eps=1e-4)
    # the chapter's grid of the MAE (broadcast by hand) is quad_loss, and the walk ends near the grid's lowest point
    a, c = torch.meshgrid(torch.linspace(0.5, 3.5, 151), torch.linspace(-0.5, 2, 126), indexing='xy')
    pred = a[..., None] * X.flatten()**2 + 1.1 * X.flatten() + c[..., None]
    grid = (pred - Y.flatten()).abs().mean(-1)
    for i, j in ((0, 0), (60, 30), (125, 150)): close(grid[i, j], quad_loss((a[i, j], 1.1, c[i, j]), X, Y), eps=1e-5)
    assert loss_a_c(path[-1]) - grid.min() < 0.01
    # the gradient points uphill: a small step along it raises the loss, against it lowers it
    g = p.grad / p.grad.norm()
    assert loss_a_c(p.detach() + 0.01*g) > loss_a_c(p.detach()) > loss_a_c(p.detach() - 0.01*g)


def test_walks_down_the_valley():
    g = torch.tensor(1.1).requires_grad_()
    valley(g).backward()
    path = descend(valley, 1.1, 0.3, 4)
    close(path[1], 1.1 - 0.3 * g.grad, eps=1e-6)                        # the first step: -lr * slope
    assert all(valley(path[i+1]) < valley(path[i]) for i in range(4))   # every step lowers the loss
    slow, good, wild = (descend(valley, 1.1, lr, 8) for lr in (0.02, 0.3, 2.5))
    assert slow[-1] - slow[0] < 0.25                                    # crawls
    close(good[-1], 2.57, eps=0.05)                                     # arrives
    assert max(valley(v) for v in wild[1:]) > valley(1.1)               # climbs above the start
    assert (wild[1:] - 2.57).abs().min() > 0.5                          # and never comes near the bottom


# --- the source's table and its bug -------------------------------------------------------------------------------
def test_the_source_verbatim_prints_its_table():
    eq(source_loop(), SOURCE_TABLE)


def test_backward_adds_to_grad():
    p = guess()
    QM(p).backward(); g1 = p.grad.clone()
    with torch.no_grad(): p -= p.grad*0.01
    q = p.detach().clone().requires_grad_()
    QM(q).backward(); g2 = q.grad
    QM(p).backward()
    close(p.grad, g1 + g2)
    eq(g1, g2)                                                         # exactly the same gradient


def test_why_the_table_accelerates():
    used_src, loss_src = first_steps(zero=False)
    used_fix, loss_fix = first_steps(zero=True)
    g = torch.tensor(-1.3529)
    eq(loss_table(loss_src.tolist()), SOURCE_TABLE)
    eq(used_fix, torch.full((10,), used_fix[0].item()))               # the corrected loop: the same gradient ten times
    close(used_fix[0], g, eps=1e-4)
    close(used_src[:7], (torch.arange(7) + 1) * used_fix[0])           # the source's sum: (i+1) g until a point crosses
    assert not torch.isclose(used_src[7], 8 * used_fix[0])
    close(loss_fix.diff(), torch.full((9,), -0.0208), eps=2e-4)
    eq(f'{-loss_fix.diff().mean():.3f}', '0.021')
    assert (loss_src.diff().diff()[:6] < 0).all()                     # the source's falls faster and faster
    close(loss_src.diff()[:6], (torch.arange(6) + 1) * loss_fix.diff()[0], eps=1e-5)  # drop i is (i+1) times the first
    printed = [float(line.split('=')[-1]) for line in SOURCE_TABLE.splitlines()]
    drops = [round(a - b, 2) for a, b in zip(printed, printed[1:])]
    eq(drops[:3], [0.02, 0.04, 0.06])                                  # the prose reads them in the table
    assert all(0.13 <= d <= 0.14 for d in drops[-3:])                  # then they stay near 0.13
    assert (-loss_src.diff()[-3:] < (torch.arange(7, 10) * -loss_fix.diff()[0])).all()  # below the pattern once points cross


# --- gd_update ----------------------------------------------------------------------------------------------------
def test_gd_update_all_or_nothing():
    p = torch.tensor([1., 2.], requires_grad=True)
    p.grad = torch.tensor([float('inf'), 1.])
    fails(lambda: gd_update(p, 0.1), contains='infinite or nan')
    eq(p.detach(), torch.tensor([1., 2.]))
    p.grad = torch.tensor([10., -10.])
    gd_update(p, 0.1)
    eq(p.detach(), torch.tensor([0., 3.]))
    # across tensors: the second one's bad gradient stops the first one's step too
    q1, q2 = torch.tensor([1.]), torch.tensor([2.])
    q1.grad, q2.grad = torch.tensor([1.]), torch.tensor([float('nan')])
    fails(lambda: gd_update([q1, q2], 0.1), contains='infinite or nan')
    eq((q1, q2), (torch.tensor([1.]), torch.tensor([2.])))
    fails(lambda: gd_update([q1, torch.tensor([0.])], 0.1), contains='parameter 1 has no gradient')
    eq(q1, torch.tensor([1.]))
    # plain tensors with a hand-set .grad (chapter 6's layers) work the same
    q2.grad = torch.tensor([4.]); gd_update([q1, q2], 0.5)
    eq((q1, q2), (torch.tensor([0.5]), torch.tensor([0.])))


@pytest.mark.parametrize('value, grad, lr', [
    (1., float('-inf'), 0.1),            # a gradient that is infinite
    (float('nan'), 0., 0.1),             # a parameter that already is nan
    (3e38, -3e38, 1.),                   # finite numbers whose step overflows float32: 3e38 + 3e38 is inf
    (-3e38, 1e38, 2.),                   # the other way
])
def test_gd_update_refuses_every_step_to_inf_or_nan(value, grad, lr):
    p, q = torch.tensor([0., value, 1.]), torch.ones(5)
    p.grad, q.grad = torch.tensor([1., grad, 1.]), torch.ones(5)
    fails(lambda: gd_update([q, p], lr), contains='infinite or nan')
    assert torch.equal(q, torch.ones(5)) and torch.equal(p[0::2], torch.tensor([0., 1.]))


def test_gd_update_takes_steps_that_stay_finite():
    "No false alarm: huge values that stay finite, a sum of values that would overflow, float16, an empty tensor."
    p = torch.full((4,), 3e38); p.grad = torch.full((4,), 1e38)   # the sum of the new values overflows, no value does
    expected = p - p.grad
    gd_update(p, 1.)
    eq(p, expected); assert torch.isinf(p.sum())
    h = torch.tensor([60000.], dtype=torch.float16); h.grad = torch.tensor([-100.], dtype=torch.float16)
    gd_update(h, 1.); eq(h, torch.tensor([60100.], dtype=torch.float16))
    h.grad = torch.tensor([-10000.], dtype=torch.float16)
    fails(lambda: gd_update(h, 1.), contains='infinite or nan')   # 70100 is beyond float16's 65504
    e = torch.zeros(0); e.grad = torch.zeros(0)
    gd_update([e, p], 0.)
    gd_update([], 0.1)


def test_gd_update_is_the_sources_arithmetic():
    "`p -= p.grad * lr`, bit for bit, in place."
    g = torch.Generator().manual_seed(0)
    p = torch.randn(1000, generator=g).requires_grad_()
    p.grad = torch.randn(1000, generator=g)
    expected = p.detach() - p.grad * 0.01
    before = p.data_ptr()
    gd_update(p, 0.01)
    assert torch.equal(p.detach(), expected) and p.data_ptr() == before


def test_gd_update_reads_back_once(monkeypatch):
    "One number read back per step, however many parameters (on a GPU, each read back waits for the device)."
    reads = []
    for name in ('item', '__bool__', '__float__', 'tolist'):
        original = getattr(torch.Tensor, name)
        def counted(self, *args, _original=original, **kwargs):
            reads.append(1)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    ps = [torch.ones(3, 2), torch.ones(2), torch.ones(5, 5), torch.ones(1)]
    for p in ps: p.grad = torch.ones_like(p)
    gd_update(ps, 0.1)
    eq(len(reads), 1)
    reads.clear()
    ps[2].grad[1, 1] = float('nan')
    fails(lambda: gd_update(ps, 0.1), contains='infinite or nan')
    eq(len(reads), 1)


@cuda
def test_gd_update_on_cuda_syncs_once_and_keeps_no_copy():
    ps = [torch.zeros(4 * 2**20, device='cuda') for _ in range(4)]   # 16 MiB each
    for p in ps: p.grad = torch.ones_like(p)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            gd_update(ps, 0.5)
    finally: torch.cuda.set_sync_debug_mode('default')
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in caught]
    extra = torch.cuda.max_memory_allocated() - base
    assert extra <= 2 * ps[0].numel() * 4 + 2**20, extra            # a temporary or two of one parameter, not a copy of all
    assert all(torch.equal(p, torch.full_like(p, -0.5)) for p in ps)


# --- fit and gd_step ----------------------------------------------------------------------------------------------
def test_fit_reproduces_the_source():
    eq(loss_table(fit(guess(), QM, lr=0.01, steps=10, accumulate=True, progress=False)), SOURCE_TABLE)


def test_fit_corrected_first_ten():
    eq([f'{l:.2f}' for l in fit(guess(), QM, lr=0.01, steps=10, progress=False)],
       ['2.42', '2.40', '2.38', '2.36', '2.34', '2.32', '2.30', '2.28', '2.26', '2.23'])


def test_gd_step_is_one_step_of_fit():
    p1, p2 = guess(), guess()
    l1 = gd_step(p1, QM, 0.01)
    eq([l1], fit(p2, QM, 0.01, steps=1, progress=False))
    assert torch.equal(p1, p2)


def test_running_to_convergence():
    abc = guess()
    correct_long = fit(abc, QM, steps=2000, progress=False)
    source_long = fit(guess(), QM, steps=100, accumulate=True, progress=False)
    close(correct_long[-1], 0.986, eps=2e-3)
    eq(f'{correct_long[-1]:.2f}', '0.99')
    assert correct_long[-1] < min(source_long)
    assert max(correct_long[1000:]) - min(correct_long[1000:]) < 0.001   # it comes down and stays there
    assert source_long[-1] > min(source_long) + 0.3                      # the accumulating loop climbs back up
    swing = torch.tensor(source_long[10:])
    close(swing.min(), 1.07, eps=0.01); close(swing.max(), 2.46, eps=0.01)
    assert (swing.diff() > 0).any() and (swing.diff() < 0).any()
    close(abc.detach(), torch.tensor([2.62, 1.34, 0.56]), eps=0.02)
    assert correct_long[-1] < quad_loss((3, 2, 1), X, Y)
    close(quad_loss((3, 2, 1), X, Y), 1.4767, eps=1e-4)
    fig, ax = plt.subplots()   # the picture of the fit draws the fitted quadratic
    plot_function(f, ax=ax); plot_function(mk_quad(*abc.detach()), ax=ax)
    close(ax.lines[1].get_ydata(), mk_quad(*abc.detach())(torch.linspace(-2.1, 2.1, 100)).numpy(), eps=1e-5)
    plt.close(fig)


def test_more_data_finds_the_truth():
    xb, yb = noisy_quadratic(n=2000)
    big = guess()
    fit(big, partial(quad_loss, x=xb, target=yb), lr=0.05, steps=1000, progress=False)
    close(big.detach(), torch.tensor([3., 2., 1.]), eps=0.1)
    close(big.detach(), torch.tensor([2.9967, 2.0396, 1.0372]), eps=1e-3)


# --- divergence: each loop stops, with the parameters as they were before the failing step --------------------------
def test_fit_stops_at_the_step_that_diverges():
    big_lr = guess()
    with pytest.raises(LossNotFinite) as e: fit(big_lr, QM_MSE, lr=1e6, steps=50, progress=False)
    eq(str(e.value), 'step 5: the step with lr=1000000.0 would make a parameter infinite or nan: gradient descent stopped; try a smaller learning rate, and look for nan or inf in the data')
    assert torch.isfinite(big_lr).all()
    fails(lambda: fit(guess(), QM_MSE, lr=1e6, steps=50, progress=False), contains='step ')


@pytest.mark.parametrize('accumulate', [False, True])
def test_every_loop_leaves_the_parameters_as_before_the_failing_step(accumulate):
    diverged = guess()
    with pytest.raises(LossNotFinite) as e: fit(diverged, QM_MSE, lr=1e6, steps=50, accumulate=accumulate, progress=False)
    failed_at = int(str(e.value).split(':')[0].removeprefix('step '))
    assert failed_at >= 1
    before = guess()
    fit(before, QM_MSE, lr=1e6, steps=failed_at, accumulate=accumulate, progress=False)
    assert torch.equal(diverged, before), (accumulate, diverged, before)
    kept = before.detach().clone()   # gd_step the same: one step from `before` fails and changes nothing
    fails(lambda: gd_step(before, QM_MSE, 1e6, accumulate=accumulate), contains='infinite or nan')
    assert torch.equal(before.detach(), kept)


def test_a_loss_that_is_not_finite_stops_before_backward():
    p = guess()
    fails(lambda: gd_step(p, lambda q: (q * float('inf')).sum(), 0.1), contains='the loss is inf')
    assert p.grad is None and torch.equal(p.detach(), torch.tensor(GUESS))
    fails(lambda: fit(p, lambda q: (q * float('nan')).sum(), progress=False), contains='step 0: the loss is nan')


# --- bad input: refused before any work -----------------------------------------------------------------------------
@pytest.mark.parametrize('bad_lr', [0, -0.1, float('nan'), float('inf'), '0.01', True])
def test_bad_learning_rates(bad_lr):
    fails(lambda: fit(guess(), QM, lr=bad_lr, progress=False), contains='positive finite number')


def test_bad_input():
    fails(lambda: fit(guess(), QM, steps=-1, progress=False), contains='steps must be')
    fails(lambda: fit(guess(), QM, steps=2.5, progress=False), contains='steps must be')
    fails(lambda: fit(torch.tensor(GUESS), QM, progress=False), contains='requires_grad_()')
    fails(lambda: fit(guess()*2, QM, progress=False), contains='leaf')
    fails(lambda: fit([], QM, progress=False), contains='empty')
    eq(fit(guess(), QM, steps=0, progress=False), [])
    forgot_mean = lambda p: (mk_quad(*p)(X) - Y).abs()
    with pytest.raises(ValueError) as e: fit(guess(), forgot_mean, progress=False)
    eq(str(e.value), 'loss_at must return one number as a tensor, got shape (20, 1): did you forget .mean()?')
    fails(lambda: fit([guess(), guess()], lambda ps: quad_loss(ps[0], X, Y), progress=False), contains='parameter 1 has no gradient')
    # gd_step checks the same things
    fails(lambda: gd_step(guess(), QM, 0), contains='positive finite number')
    fails(lambda: gd_step(guess()*2, QM, 0.01), contains='leaf')
    fails(lambda: gd_step(guess(), forgot_mean, 0.01), contains='(20, 1)')
    fails(lambda: gd_step(guess(), lambda p: 1.0, 0.01), contains='float')


def test_fit_checks_its_arguments_once(monkeypatch):
    checked, check_once = [], gd._params_list
    monkeypatch.setattr(gd, '_params_list', lambda params: checked.append(1) or check_once(params))
    fit(guess(), QM, steps=5, progress=False)
    eq(len(checked), 1)


# --- the stepper and the exercises ----------------------------------------------------------------------------------
def test_the_stepper_is_fit():
    widgets = pytest.importorskip('neuralwiki.widgets')
    w = widgets.GDStepper()
    w.advance(10)
    p = guess()
    eq(w.history, fit(p, QM, steps=10, progress=False))
    assert torch.equal(w.params.detach(), p.detach())
    plt.close('all')


def test_the_exercise_stubs_fail_with_a_hint():
    "The chapter's stubs, as a reader first runs them: a failed check with a message, never an exception."
    from neuralwiki.exercises import check
    def my_step(params, loss_at, lr): ...  # your code here
    def my_df(x): ...  # your code here
    r = check(my_step)
    assert not r.passed and 'did not change params' in r.message
    assert r.message.endswith('Hint: params.grad is still None: compute the gradient with loss_at(params).backward(), '
                              'then change params in place')
    r = check(my_df)
    assert not r.passed and 'return' in r.message
    eq(r.message, '❌ df(tensor(0.)) should return a tensor like tensor(2.) but your function returned None\n'
                  'Hint: did you forget `return`?')
