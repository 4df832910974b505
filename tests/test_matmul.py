"""Chapter 1, `neuralwiki.matmul`: what the chapter shows once, checked here in full.

Every rung against `torch.matmul` on awkward shapes (1×1, a single inner position, empty, random) in float32 and
float64 and on integers; `check_matmul`'s refusals, the same through every rung; gradients through the rungs; the
FLOP count; the chapter's compiled rung (with numba); its pictures and its table, drawn by the chapter's own cells
(run here from the notebook); the answers its flashcards claim; and the message `check` gives on its exercise stubs.
"""
import re
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_rgb

from _notebooks import run_cells
from neuralwiki.core import best_time
from neuralwiki.matmul import MATMULS, check_matmul, matmul_flops, matmul_loops, matmul_torch, triple_loop

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT/'nbs'/'01_matmul.ipynb'
A2, B2 = torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[5., 6.], [7., 8.]])
AB2 = torch.tensor([[1*5 + 2*7, 1*6 + 2*8], [3*5 + 4*7, 3*6 + 4*8]])  # by hand
FIXED = [(1, 1, 1), (1, 3, 1), (3, 1, 4), (4, 1, 1), (2, 3, 5), (7, 2, 3), (0, 3, 2), (2, 0, 3), (3, 2, 0)]
RANDOM = [tuple(torch.randint(1, 13, (3,), generator=torch.Generator().manual_seed(i)).tolist()) for i in range(8)]


def tolerance(dtype, k): return (1e-4 if dtype == torch.float32 else 1e-12) * max(1, k) ** 0.5


def check_rung(f, a, b):
    "Assert that `f(a, b)` has the shape and dtype of `torch.matmul(a, b)` and is close to it."
    expected, got = torch.matmul(a, b), f(a, b)
    assert got.shape == expected.shape and got.dtype == a.dtype
    torch.testing.assert_close(got, expected, rtol=tolerance(a.dtype, a.shape[1]), atol=tolerance(a.dtype, a.shape[1]))


@pytest.fixture(scope='module')
def digits():
    "The chapter's data: scikit-learn's digits, its five scans `x` and its random 64×10 weights `w`."
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data[:5], dtype=torch.float32)
    w = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    return d, x, w


def chapter(*ids, **names):
    "The chapter's imports and `neuron`, then its cells `ids`, with `names` defined first."
    return run_cells(CHAPTER, 'a1c0de01', 'd080e844', *ids, ns=dict(names))


# --- check_matmul: one gatekeeper, the same words through every rung -----------------------------------------------
X, W = torch.rand(5, 64, generator=torch.Generator().manual_seed(1)), torch.randn(64, 10, generator=torch.Generator().manual_seed(2))
BAD = [((X, X), ValueError, 'inner dimensions differ: a has shape (5, 64) and b has shape (5, 64)'),
       ((X[0], W), ValueError, '(64,)'), ((X[None], W), ValueError, '(1, 5, 64)'),
       ((X.tolist(), W), TypeError, 'a must be a torch.Tensor, got list'), ((X, 2.0), TypeError, 'got float'),
       ((X, W.double()), TypeError, 'torch.float32 but b is torch.float64'),
       ((X.long(), W), TypeError, 'torch.int64 but b is torch.float32'),
       ((X > 0, W > 0), TypeError, 'torch.bool'), ((X, W.to('meta')), ValueError, 'meta')]


def test_check_matmul_gives_the_sizes():
    assert check_matmul(X, W) == (5, 64, 10)
    assert check_matmul(torch.ones(0, 3), torch.ones(3, 2)) == (0, 3, 2)


@pytest.mark.parametrize('args, error, words', BAD)
def test_check_matmul_refuses(args, error, words):
    with pytest.raises(error, match=re.escape(words)): check_matmul(*args)


@pytest.mark.parametrize('name', list(MATMULS))
def test_every_rung_refuses_in_the_same_words(name):
    f = MATMULS[name]
    ai, bi = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 8]])
    for args, error, words in [((X, X), ValueError, 'a has shape (5, 64) and b has shape (5, 64)'),
                               ((torch.ones(3), torch.ones(3, 2)), ValueError, '(3,)'),
                               (([[1.]], torch.ones(1, 1)), TypeError, 'torch.Tensor'),
                               ((X, W.double()), TypeError, 'torch.float64'), ((X.int(), W), TypeError, 'torch.int32'),
                               ((ai > 2, bi > 2), TypeError, 'bool')]:
        with pytest.raises(error, match=re.escape(words)): f(*args)


# --- every rung is the matrix product ------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(MATMULS))
def test_every_rung_by_hand(name):
    assert torch.equal(MATMULS[name](A2, B2), AB2)
    ai, bi = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 8]])
    got = MATMULS[name](ai, bi)
    assert got.dtype == torch.int64 and torch.equal(got, torch.tensor([[19, 22], [43, 50]]))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_every_rung_matches_torch(dtype, digits):
    g = torch.Generator().manual_seed(0)
    for m, k, n in FIXED + RANDOM:
        a, b = torch.randn(m, k, generator=g, dtype=dtype), torch.randn(k, n, generator=g, dtype=dtype)
        for f in MATMULS.values(): check_rung(f, a, b)
    _, x, w = digits
    for f in MATMULS.values(): check_rung(f, (x / 16).to(dtype), w.to(dtype))  # pixels scaled to 0..1


def test_gradients_flow_through_the_torch_rungs_as_through_at(digits):
    "rows, broadcast, einsum and torch compute with torch, so they pass gradients back exactly as `@` does."
    _, x, w = digits
    xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
    (xt @ wt).sum().backward()
    for name in ('rows', 'broadcast', 'einsum', 'torch'):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        MATMULS[name](xg, wg).sum().backward()
        torch.testing.assert_close(xg.grad, xt.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(wg.grad, wt.grad, rtol=1e-4, atol=1e-4)
    assert not matmul_loops(x.clone().requires_grad_(), w).requires_grad  # the loops read plain numbers out


def test_triple_loop_works_on_lists():
    c = [[0] * 2 for _ in range(2)]
    triple_loop(A2.tolist(), B2.tolist(), c, 2, 2, 2)
    assert c == AB2.tolist()


def test_matmul_flops():
    assert matmul_flops(1, 3, 1) == 6  # one dot product of length 3: 3 multiplies, 3 adds
    assert matmul_flops(5, 64, 10) == 6_400
    assert matmul_flops(1024, 1024, 1024) == 2 * 1024**3


def test_a_blas_call_beats_the_python_loops(digits):
    _, x, w = digits
    assert best_time(matmul_torch, x, w, repeats=20) * 3 < best_time(matmul_loops, x, w, repeats=5)


# --- the chapter's own examples ------------------------------------------------------------------------------------
def test_the_chapter_examples(digits):
    d, x, w = digits
    neuron = chapter()['neuron']
    assert neuron([1., 2., 3.], [0.5, -1., 2.]) == 1*0.5 + 2*-1 + 3*2
    row = torch.tensor(d.images[0], dtype=torch.float32).reshape(1, 64)
    assert torch.equal(row[0], x[0])  # read row by row: scikit-learn's own 64 numbers
    assert (row @ w).shape == (1, 10) and x.shape == (5, 64)
    layer = torch.tensor([[neuron(x[i].tolist(), w[:, j].tolist()) for j in range(10)] for i in range(5)])
    torch.testing.assert_close(layer, x @ w, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close((x @ w)[:1], row @ w)  # row 0 is the digit the chapter draws
    col, table = torch.tensor([[1.], [2.], [3.]]), torch.tensor([[1., 10.], [1., 10.], [1., 10.]])
    assert torch.equal(col * table, torch.tensor([[1., 10.], [2., 20.], [3., 30.]]))
    assert torch.equal(torch.einsum('i,j->ij', torch.tensor([1., 2.]), torch.tensor([3., 4.])), torch.tensor([[3., 4.], [6., 8.]]))
    assert torch.ones(2, 3).shape == (2, 3)


def test_the_chapters_compiled_rung(digits):
    pytest.importorskip('numba')
    ns = run_cells(CHAPTER, 'c1njit-import', 'c1njit02', ns=dict(check_matmul=check_matmul, triple_loop=triple_loop, torch=torch))
    _, x, w = digits
    for a, b in ((x, w), (x.double(), w.double()), (torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [7, 8]]))):
        check_rung(ns['matmul_compiled'], a, b)
    with pytest.raises(ValueError, match='inner dimensions differ'): ns['matmul_compiled'](x, x)


# --- the chapter's pictures and its table, drawn by its own cells --------------------------------------------------
def texts(ax): return [t.get_text() for t in ax.texts]


def test_the_neuron_and_the_layer_pictures():
    ns = chapter('c1diagram-imports', 'a1c0de04')
    ax = ns['draw_neuron']([1., 2., 3.], [0.5, -1., 2.])
    assert ax.get_title() == 'One neuron: each input times its weight, added up' and ax.get_xlabel() and ax.get_ylabel()
    assert '4.5' in texts(ax) and '$w_2$ = -1' in texts(ax)  # the output node shows the sum; the arrows the weights
    assert ax.figure.get_size_inches()[0] <= 9
    ax = ns['draw_layer'](4, 3)
    assert ax.get_title() == 'A layer: 3 neurons, each with its own 4 weights'
    assert len(ax.patches) == 4 + 3 + 3*4 + 3  # nodes: 4 inputs and 3 sums; arrows: 12 weights and 3 outputs
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['column 1 of w', 'column 2 of w', 'column 3 of w']
    assert ax.figure.get_size_inches()[0] <= 9
    plt.close('all')


def test_the_digit_through_a_layer(digits):
    d, _, w = digits
    image = torch.tensor(d.images[0], dtype=torch.float32)
    fig = chapter('a1c0de11')['draw_digit_layer'](image, w, j=3)
    out = (image.reshape(1, 64) @ w)[0]
    assert len(fig.axes) == 4
    assert [fig.axes[i].images[0].get_array().shape for i in range(3)] == [(8, 8), (1, 64), (64, 10)]
    torch.testing.assert_close(torch.tensor([p.get_width() for p in fig.axes[3].patches]), out, rtol=1e-4, atol=1e-4, check_dtype=False)
    assert f'{out[3]:.1f}' in fig._suptitle.get_text()
    assert all(ax.get_title() and ax.get_xlabel() for ax in fig.axes) and fig.get_size_inches()[0] <= 9
    plt.close('all')


def test_the_broadcasting_picture():
    col, table = torch.tensor([[1.], [2.], [3.]]), torch.tensor([[1., 10.], [1., 10.], [1., 10.]])
    fig = chapter('c1bcst01')['draw_broadcast'](col, table)
    stretched, tab, out = fig.axes
    assert texts(stretched) == ['1', '1', '2', '2', '3', '3'] and texts(out) == ['1', '10', '2', '20', '3', '30']
    dashed = [p.get_linestyle() == '--' for p in stretched.patches]
    assert dashed == [False, True] * 3  # column 0 is stored, column 1 only a stretched copy
    assert [t.get_text() for t in stretched.get_legend().get_texts()] == ['stored', 'stretched copy, not stored']
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert fig._suptitle.get_text() and fig.get_size_inches()[0] <= 9
    plt.close('all')


def test_the_ladder_table_and_picture():
    ns = chapter('211a7bff', 'a52c1c9d')
    assert ns['ladder_table']({'loops': 2e-3, 'torch': 4e-6}, 6_400).splitlines()[2:] == [
        '| `loops` | 2,000.0 | 0.003 | 1.0× |', '| `torch` | 4.0 | 1.600 | 500× |']
    assert ns['ladder_table']({'loops': 1e-3, 'rows': 4e-3}, 6_400).splitlines()[-1] == '| `rows` | 4,000.0 | 0.002 | 0.2× |'
    times = {'loops': 2e-3, 'compiled': 3e-5, 'rows': 6e-3, 'broadcast': 6e-4, 'einsum': 1.5e-5, 'torch': 4e-6}
    ax = ns['plot_speedups'](times)
    assert ax.get_yscale() == 'log' and [t.get_text() for t in ax.get_xticklabels()] == list(times)
    torch.testing.assert_close(torch.tensor([p.get_height() for p in ax.patches[:6]]),
                               torch.tensor([times['loops'] / t for t in times.values()]), check_dtype=False)
    assert texts(ax)[0] == '1.0×'  # the loops against themselves
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ['Python loops', 'compiled loops', 'Python loops calling torch', 'one call to BLAS']
    colors = [to_rgb(p.get_facecolor()) for p in ax.patches[:6]]
    assert colors[2] == colors[3] != colors[0] and colors[4] == colors[5] != colors[1]  # coloured by kind
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and ax.figure.get_size_inches()[0] <= 9
    small = ns['time_ladder']({'torch': matmul_torch}, A2, B2)
    assert list(small) == ['torch'] and 0 < small['torch'] < 1
    plt.close('all')


# --- the answers the flashcards claim; the exercises' stubs -----------------------------------------------------------
def test_the_cards_answers(digits):
    _, _, w = digits
    assert (torch.zeros(5, 64).ndim, torch.tensor(3.).ndim) == (2, 0)
    assert str((torch.ones(3, 1) * torch.ones(1, 4)).shape) == 'torch.Size([3, 4])'
    assert repr(torch.einsum('k,k->', torch.tensor([1., 2.]), torch.tensor([3., 4.]))) == 'tensor(11.)'
    assert matmul_flops(5, 64, 10) == 6_400
    row = torch.zeros(1, 64)
    assert (row.shape, w.shape, (row @ w).shape) == ((1, 64), (64, 10), (1, 10))
    a, b = torch.ones(4, 64), torch.ones(64, 10)
    assert (a[1, :, None].shape, (a[1, :, None] * b).shape, (a[1, :, None] * b).sum(dim=0).shape) == ((64, 1), (64, 10), (10,))
    with pytest.raises(RuntimeError, match='dtype'): torch.ones(2, 2) @ torch.ones(2, 2, dtype=torch.float64)


def test_the_exercise_stubs_say_return_is_missing():
    "The chapter's exercise cells hold stubs that return nothing: `check` says so (and a right answer passes)."
    from neuralwiki.exercises import check
    stub = check(lambda a, b: None, 'dot')
    assert not stub.passed and stub.message.startswith('❌ dot(') and 'forget `return`' in stub.message
    stub = check(lambda a, b: None, 'matmul')
    assert not stub.passed and stub.message.startswith('❌ matmul(') and 'forget `return`' in stub.message
    assert check(lambda a, b: (a * b).sum(), 'dot').passed and check(MATMULS['broadcast'], 'matmul').passed
