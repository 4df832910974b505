"""Device-agnostic library: every tensor function computes on the device and dtype of its inputs.

Two traps, each of which a hidden `.cpu()`, `.item()` or `torch.zeros(...)` inside a computation falls into:

- `meta` inputs: the meta device has shapes and dtypes but no numbers, so a computation that copies data to the CPU
  (`.cpu()`, `.numpy()`, `.item()`) raises, and one that makes a tensor on the CPU and mixes it in raises
  ("Tensor on device cpu is not on the expected device meta"). Every output must come back on meta, of the right
  shape and dtype.
- the inversion, for functions that end in a Python number by design (`largest_gap`, `fit`, `train`, `accuracy`) or
  check values (`interpolating_relus`, `cross_entropy`): CPU inputs while torch's default device is `meta`. A
  tensor made "on the default device" inside the computation lands on meta and cannot meet the CPU data; outputs
  must come back on the CPU.

Data-making functions take `device=` and are checked with it. The CUDA tests run only where there is a GPU.
"""
import math

import pytest
import torch

from neuralwiki.relu import relu, source_curve as f, largest_gap, rectified_linear, double_relu, sum_of_relus, interpolating_relus
from neuralwiki.loss import quad, mk_quad, noise, add_noise, noisy_quadratic, mae, mse, quad_loss, LOSSES
from neuralwiki.gd import gd_update, gd_step, fit, loss_table, LossNotFinite, SOURCE_TABLE
from neuralwiki.nn import Linear, ReLU, MSE, mlp, to_torch, log_softmax, softmax, cross_entropy, CrossEntropy
from neuralwiki.training import train_step, batches, train, digits, accuracy

META = torch.device('meta')
CPU = torch.device('cpu')
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU here')


def on(t, device, dtype=None, shape=None):
    "Assert `t` is a tensor on `device` (and of `dtype`, `shape` when given)."
    assert isinstance(t, torch.Tensor), type(t)
    assert t.device.type == torch.device(device).type, f"on {t.device}, expected {device}"
    if dtype is not None: assert t.dtype == dtype, f"{t.dtype}, expected {dtype}"
    if shape is not None: assert tuple(t.shape) == tuple(shape), f"shape {tuple(t.shape)}, expected {tuple(shape)}"


@pytest.fixture
def default_meta():
    "Make torch's default device `meta` for the test: any tensor made without a device lands there."
    with torch.device('meta'): yield


def test_the_traps_catch_what_they_are_for(default_meta):
    """Each trap fails a function with the bug it is for, where the library's own function passes: a ReLU that reads a
    number out (`.item()`) fails on meta inputs; one that makes its zeros on the default device fails on CPU inputs
    while the default device is meta."""
    def reads_a_number(x): return x * (x.max().item() > 0)
    def zeros_on_the_default_device(x): return torch.maximum(x, torch.zeros(x.shape))
    with pytest.raises(RuntimeError): reads_a_number(torch.ones(3, device=META))
    with pytest.raises(RuntimeError): zeros_on_the_default_device(torch.ones(3, device=CPU))
    on(relu(torch.ones(3, device=META)), META, shape=(3,))
    on(relu(torch.ones(3, device=CPU)), CPU, shape=(3,))


# --- chapter 1: matmul (the five rungs every reader runs) ----------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.int64])
def test_matmuls_keep_device_and_dtype(dtype):
    from neuralwiki.matmul import MATMULS
    a, b = torch.ones(3, 4, dtype=dtype), torch.ones(4, 2, dtype=dtype)
    for name in ('loops', 'rows', 'broadcast', 'einsum', 'torch'):
        fn = MATMULS[name]
        if name != 'loops':   # the Python loop reads the numbers out (`tolist`) by design: meta has none
            on(fn(a.to('meta'), b.to('meta')), META, dtype, (3, 2))
        with torch.device('meta'): out = fn(a, b)
        on(out, CPU, dtype, (3, 2)); assert torch.equal(out, torch.full((3, 2), 4, dtype=dtype))


# --- chapter 2: relu --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.int64])
def test_relu_on_meta(dtype):
    x = torch.empty(3, 4, device=META, dtype=dtype)
    on(relu(x), META, dtype, (3, 4))
    on(f(x), META, dtype, (3, 4))
    on(rectified_linear(2., -1., x), META, shape=(3, 4))
    on(double_relu(1., 0., -1., 0., x), META, shape=(3, 4))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_sum_of_relus_on_meta(dtype):
    x = torch.empty(5, 2, device=META, dtype=dtype)
    ms, bs, ws = (torch.empty(7, device=META, dtype=dtype) for _ in range(3))
    on(sum_of_relus(ms, bs, x, ws), META, dtype, (5, 2))
    on(sum_of_relus(ms, bs, x), META, dtype, (5, 2))
    on(sum_of_relus([1., 2.], [0., -1.], x), META, shape=(5, 2))                # lists are made where x is
    on(sum_of_relus([torch.tensor(1.), 2.], [0., -1.], x, ws=[1., 1.]), META, shape=(5, 2))


def test_relu_functions_make_nothing_on_the_default_device(default_meta):
    knots = torch.linspace(-2, 2, 5, device=CPU, dtype=torch.float64)
    ms, bs, ws = interpolating_relus(f, knots)
    for t in (ms, bs, ws): on(t, CPU, torch.float64, (5,))
    on(sum_of_relus(ms, bs, knots, ws), CPU, torch.float64, (5,))
    on(sum_of_relus([1., 1.], [0., -1.], knots), CPU, shape=(5,))
    gap, at = largest_gap(lambda x: sum_of_relus(ms, bs, x, ws), device='cpu')
    assert isinstance(gap, float) and isinstance(at, float) and gap < 0.8


def test_interpolating_relus_values_unchanged():
    "The default path is the same numbers as before: the source's chapter-2 example."
    ms, bs, ws = interpolating_relus(lambda x: x**2, torch.tensor([-1., 0., 1.]))
    assert torch.equal(ms, torch.tensor([0., 1., 1.])) and torch.equal(bs, torch.tensor([1., 1., 0.]))
    assert torch.equal(ws, torch.tensor([1., -1., 2.]))
    assert largest_gap(torch.zeros_like) == (17.0, 2.0)


def test_largest_gap_makes_its_points_on_device():
    seen = []
    def fit(x):
        seen.append(x.device)
        return torch.zeros_like(x)
    assert largest_gap(fit, device='cpu') == (17.0, 2.0)
    assert seen == [CPU]


# --- chapter 3: loss --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_losses_on_meta(dtype):
    p, t = torch.empty(20, 1, device=META, dtype=dtype), torch.empty(20, 1, device=META, dtype=dtype)
    for loss_func in (mae, mse, *LOSSES.values()): on(loss_func(p, t), META, dtype, ())
    on(quad(1., 2., 3., p), META, dtype, (20, 1))
    on(mk_quad(1., 2., 3.)(p), META, dtype, (20, 1))
    on(quad_loss((1.1, 1.1, 1.1), p, t), META, dtype, ())
    abc = torch.empty(3, device=META, dtype=dtype)
    on(quad_loss(abc, p, t, loss_func=mse), META, dtype, ())


def test_noise_goes_where_x_is():
    x = torch.empty(20, 1, device=META)
    on(noise(x, 0.1), META, torch.float64, (20, 1))
    on(add_noise(x, 0.15, 1.5), META, torch.float64, (20, 1))


@pytest.mark.parametrize('dtype', [None, torch.float32, torch.float64])
def test_noisy_quadratic_device(dtype):
    x, y = noisy_quadratic(dtype=dtype, device='meta')
    on(x, META, dtype or torch.float32, (20, 1)); on(y, META, dtype or torch.float64, (20, 1))


def test_noisy_quadratic_default_device(default_meta):
    x, y = noisy_quadratic()              # device=None follows torch's default device...
    on(x, META); on(y, META)
    x, y = noisy_quadratic(device='cpu')  # ...and the numbers are made on the CPU whatever it is
    with torch.device('cpu'): x0, y0 = noisy_quadratic()
    assert torch.equal(x, x0) and torch.equal(y, y0) and y.dtype == torch.float64


def test_noisy_quadratic_is_the_source():
    x, y = noisy_quadratic()
    on(x, CPU, torch.float32); on(y, CPU, torch.float64)
    assert torch.allclose(y[:3].flatten(), torch.tensor([11.869037, 6.543284, 5.939607], dtype=torch.float64))


# --- chapter 4: gradient descent --------------------------------------------------------------------------------


def test_the_source_table_on_the_default_path():
    x, y = noisy_quadratic()
    abc = torch.tensor([1.1, 1.1, 1.1]).requires_grad_()
    assert loss_table(fit(abc, lambda p: quad_loss(p, x, y), lr=0.01, steps=10, accumulate=True, progress=False)) == SOURCE_TABLE


def test_gd_makes_nothing_on_the_default_device(default_meta):
    x, y = noisy_quadratic(device='cpu')
    abc = torch.tensor([1.1, 1.1, 1.1], device='cpu').requires_grad_()
    history = fit(abc, lambda p: quad_loss(p, x, y), lr=0.01, steps=10, accumulate=True, progress=False)
    assert loss_table(history) == SOURCE_TABLE                       # the source's table, made under the trap
    on(abc, CPU, torch.float32, (3,)); on(abc.grad, CPU, torch.float32, (3,))
    assert isinstance(gd_step(abc, lambda p: quad_loss(p, x, y), lr=0.01), float)
    p = torch.ones(2, device='cpu', requires_grad=True)
    p.grad = torch.full((2,), math.inf, device='cpu')
    with pytest.raises(LossNotFinite): gd_update([p], 0.1)
    assert torch.equal(p.detach(), torch.ones(2, device='cpu'))


def test_gd_update_on_a_device_keeps_it():
    "`gd_update` on CPU float64 parameters: results stay there, of that dtype, updated in place."
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    p.grad = torch.ones(3, dtype=torch.float64)
    before = p.data_ptr()
    gd_update(p, 0.5)
    on(p, CPU, torch.float64); assert p.data_ptr() == before and torch.equal(p.detach(), torch.full((3,), -0.5, dtype=torch.float64))


# --- chapter 6: the network -------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_layers_on_meta(dtype):
    lin = Linear(3, 2, torch.Generator().manual_seed(0), dtype, device='meta')
    on(lin.w, META, dtype, (3, 2)); on(lin.b, META, dtype, (2,)); on(lin.w.grad, META, dtype, (3, 2))
    x = torch.empty(4, 3, device=META, dtype=dtype)
    out = lin(x)
    on(out, META, dtype, (4, 2))
    on(lin.backward(torch.empty(4, 2, device=META, dtype=dtype)), META, dtype, (4, 3))
    on(lin.w.grad, META, dtype, (3, 2)); on(lin.b.grad, META, dtype, (2,))
    r = ReLU()
    on(r(out), META, dtype, (4, 2)); on(r.backward(out), META, dtype, (4, 2))
    loss = MSE()
    on(loss(out, torch.empty(4, 2, device=META, dtype=dtype)), META, dtype, ())
    on(loss.backward(), META, dtype, (4, 2))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_network_on_meta(dtype):
    net = mlp([5, 8, 3], seed=0, dtype=dtype, device='meta')
    assert all(p.device == META and p.dtype == dtype for p in net.parameters())
    x = torch.empty(6, 5, device=META, dtype=dtype)
    logits = net(x)
    on(logits, META, dtype, (6, 3))
    on(log_softmax(logits), META, dtype, (6, 3)); on(softmax(logits), META, dtype, (6, 3))
    ce = CrossEntropy()
    on(ce.forward(logits, torch.empty(6, device=META, dtype=torch.int64)), META, dtype, ())  # forward: no value checks
    grad = ce.backward()
    on(grad, META, dtype, (6, 3))
    on(net.backward(grad), META, dtype, (6, 5))
    net.zero_grad()
    assert all(p.grad.device == META for p in net.parameters())
    tnet = to_torch(net)
    assert all(p.device == META and p.dtype == dtype for p in tnet.parameters())
    on(tnet(x), META, dtype, (6, 3))


def test_the_same_weights_on_every_device():
    "One seed, one network: the weights are drawn on the generator's device, then moved."
    cpu_net, meta_net = mlp([4, 3, 2], seed=0), mlp([4, 3, 2], seed=0, device='meta')
    assert all(p.device == CPU for p in cpu_net.parameters()) and all(p.device == META for p in meta_net.parameters())
    with torch.device('meta'): default_net = mlp([4, 3, 2], seed=0)
    assert all(p.device == META for p in default_net.parameters())
    assert torch.equal(mlp([4, 3, 2], seed=0, device='cpu').layers[0].w, cpu_net.layers[0].w)


def test_batches_device():
    g = torch.Generator().manual_seed(0)
    for idx in batches(10, 4, g, device='meta'): on(idx, META, torch.int64)
    for idx in batches(10, None, device='meta'): on(idx, META, torch.int64, (10,))
    cpu = [b.tolist() for b in batches(10, 4, torch.Generator().manual_seed(0))]
    with torch.device('meta'):
        same = [b.tolist() for b in batches(10, 4, torch.Generator().manual_seed(0), device='cpu')]
    assert cpu == same                    # the shuffle does not depend on where the row numbers go


def test_inputs_on_another_device_are_refused():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match=r"weights on cpu but got inputs on meta: move them, x.to\('cpu'\)"):
        lin(torch.empty(4, 3, device='meta'))
    assert lin._checked is None                      # a refused input is not remembered
    with pytest.raises(ValueError, match=r"labels are on cpu but logits are on meta"):
        CrossEntropy()(torch.empty(2, 3, device='meta'), torch.tensor([0, 2]))


def test_training_makes_nothing_on_the_default_device(default_meta):
    x, y = noisy_quadratic(dtype=torch.float32, device='cpu')
    net = mlp([1, 8, 1], seed=0, device='cpu')
    h = train(net, MSE(), x, y, lr=0.03, epochs=3, progress=False)
    h_b = train(mlp([1, 8, 1], seed=0, device='cpu'), MSE(), x, y, lr=0.03, epochs=3, bs=6, progress=False)
    assert len(h) == len(h_b) == 3 and all(isinstance(l, float) for l in h + h_b)
    assert all(p.device == CPU for p in net.parameters())
    on(net(x), CPU, torch.float32, (20, 1))
    assert isinstance(train_step(net, MSE(), x, y, 0.01), float)
    logits, labels = torch.randn(6, 4, device='cpu'), torch.tensor([0, 1, 2, 3, 0, 1], device='cpu')
    on(cross_entropy(logits, labels), CPU, torch.float32, ())
    ce = CrossEntropy()
    on(ce(logits, labels), CPU, torch.float32, ()); on(ce.backward(), CPU, torch.float32, (6, 4))
    assert isinstance(accuracy(logits, labels), float)


def test_training_is_the_same_inside_the_trap():
    "Under the trap or not, the same numbers: nothing depends on the default device."
    x, y = noisy_quadratic(dtype=torch.float32)
    h = train(mlp([1, 8, 1], seed=0), MSE(), x, y, lr=0.03, epochs=5, bs=6, progress=False)
    with torch.device('meta'):
        h_trap = train(mlp([1, 8, 1], seed=0, device='cpu'), MSE(), x, y, lr=0.03, epochs=5, bs=6, progress=False)
    assert h == h_trap


def test_digits_device():
    pytest.importorskip('sklearn')
    out = digits(device='meta')
    for t, dtype, shape in zip(out, (torch.float32, torch.int64) * 2, [(1437, 64), (1437,), (360, 64), (360,)]):
        on(t, META, dtype, shape)
    cpu = digits()
    with torch.device('meta'):
        trapped = digits(device='cpu')
        raw = digits(standardize=False, device='cpu')
    assert all(torch.equal(a, b) for a, b in zip(cpu, trapped))
    assert torch.equal(raw[1], cpu[1]) and raw[0].max() == 16


# --- CUDA, only where there is a GPU ----------------------------------------------------------------------------
@cuda
def test_cuda_relu_and_losses():
    x = torch.randn(50, 1, device='cuda', dtype=torch.float64)
    for out in (relu(x), sum_of_relus([1., 2.], [0., 1.], x), mse(x, x), mae(x, x), quad_loss((1., 2., 3.), x, x)):
        on(out, 'cuda', torch.float64)
    ms, bs, ws = interpolating_relus(f, torch.linspace(-2, 2, 9, device='cuda'))
    on(ms, 'cuda'); on(ws, 'cuda')
    assert largest_gap(lambda x: sum_of_relus(ms, bs, x, ws), device='cuda')[0] < 0.2


@cuda
def test_cuda_fit_is_the_source():
    x, y = noisy_quadratic(device='cuda')
    on(x, 'cuda', torch.float32); on(y, 'cuda', torch.float64)
    assert torch.equal(y.cpu(), noisy_quadratic()[1])
    abc = torch.tensor([1.1, 1.1, 1.1], device='cuda').requires_grad_()
    history = fit(abc, lambda p: quad_loss(p, x, y), lr=0.01, steps=10, accumulate=True, progress=False)
    assert loss_table(history) == SOURCE_TABLE


@cuda
def test_cuda_training_matches_cpu():
    pytest.importorskip('sklearn')
    xc, yc, xtc, ytc = digits()
    xg, yg, xtg, ytg = digits(device='cuda')
    assert torch.equal(xg.cpu(), xc)
    cpu_net, gpu_net = mlp([64, 64, 10], seed=0), mlp([64, 64, 10], seed=0, device='cuda')
    assert all(torch.equal(p.cpu(), q) for p, q in zip(gpu_net.parameters(), cpu_net.parameters()))
    h_cpu = train(cpu_net, CrossEntropy(), xc, yc, lr=0.1, epochs=3, bs=32, progress=False)
    h_gpu = train(gpu_net, CrossEntropy(), xg, yg, lr=0.1, epochs=3, bs=32, progress=False)
    assert all(p.device.type == 'cuda' for p in gpu_net.parameters())
    assert all(abs(a - b) < 1e-4 for a, b in zip(h_cpu, h_gpu)), (h_cpu, h_gpu)
    assert abs(accuracy(gpu_net(xtg), ytg) - accuracy(cpu_net(xtc), ytc)) < 0.01
