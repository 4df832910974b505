"""Chapter 6, the layers (`neuralwiki.nn`): every hand-written backward pass against PyTorch's autograd, and every
input the layers and losses refuse.

The chapter keeps one visible check per example; the batteries are here. Gradients are compared in float64 to 1e-10
where a whole network is checked, so that a wrong formula cannot hide behind rounding.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from neuralwiki.loss import noisy_quadratic
from neuralwiki.nn import (Layer, Linear, ReLU, MSE, Sequential, mlp, to_torch, log_softmax, softmax,
                           cross_entropy, CrossEntropy)


def gen(seed): return torch.Generator().manual_seed(seed)

def close(a, b, eps): assert_close(a, b, atol=eps, rtol=0)


# --- the 2x2 example, worked by hand in the chapter ------------------------------------------------------------------
X = [[1., 2.], [3., 4.]]
W = [[1., -1.], [2., 0.]]
B = [0.5, -1.]
G = [[1., 0.], [0., 2.]]

def test_the_2x2_example_by_hand_is_what_autograd_computes():
    x, w, b = (torch.tensor(t, requires_grad=True) for t in (X, W, B))
    g = torch.tensor(G)
    out = x @ w + b
    out.backward(g)
    assert torch.equal(out.detach(), torch.tensor([[5.5, -2.], [11.5, -4.]]))
    assert torch.equal(w.grad, torch.tensor([[1., 6.], [2., 8.]]))
    assert torch.equal(b.grad, torch.tensor([1., 2.]))
    assert torch.equal(x.grad, torch.tensor([[1., 2.], [-2., 0.]]))
    # the three products of the table
    assert torch.equal(w.grad, x.detach().T @ g)
    assert torch.equal(b.grad, g.sum(0))
    assert torch.equal(x.grad, g @ w.detach().T)


def test_linear_on_the_2x2_example():
    lin = Linear(2, 2)
    lin.w, lin.b = torch.tensor(W), torch.tensor(B)
    lin.zero_grad()
    assert torch.equal(lin(torch.tensor(X)), torch.tensor([[5.5, -2.], [11.5, -4.]]))
    assert torch.equal(lin.backward(torch.tensor(G)), torch.tensor([[1., 2.], [-2., 0.]]))
    assert torch.equal(lin.w.grad, torch.tensor([[1., 6.], [2., 8.]]))
    assert torch.equal(lin.b.grad, torch.tensor([1., 2.]))


@pytest.mark.parametrize('n, n_in, n_out', [(4, 3, 2), (1, 5, 1), (7, 1, 6)])
def test_linear_backward_against_autograd(n, n_in, n_out):
    lin = Linear(n_in, n_out, gen(0))
    xb = torch.randn(n, n_in, generator=gen(1))
    out = lin(xb)
    assert out.shape == (n, n_out)
    grad_x = lin.backward(2*out)   # the loss: the sum of the squared outputs
    w_, b_, x_ = lin.w.clone().requires_grad_(), lin.b.clone().requires_grad_(), xb.clone().requires_grad_()
    ((x_ @ w_ + b_)**2).sum().backward()
    close(lin.w.grad, w_.grad, 1e-5)
    close(lin.b.grad, b_.grad, 1e-5)
    close(grad_x, x_.grad, 1e-5)
    assert [lin.w.grad.shape, lin.b.grad.shape, grad_x.shape] == [lin.w.shape, lin.b.shape, xb.shape]


def test_linear_checks_each_new_shape_once():
    lin = Linear(3, 2, gen(0))
    xb = torch.randn(4, 3, generator=gen(1))
    lin(xb)
    assert lin._checked == (xb.shape, torch.float32, xb.device)   # checked once for this shape
    with pytest.raises(TypeError, match=r'x\.to\(torch\.float32\)'): lin(xb.double())
    with pytest.raises(ValueError, match='width 3'): lin(xb[:, :2])
    with pytest.raises(ValueError, match=r"x\.to\('cpu'\)"): lin(xb.to('meta'))
    assert lin._checked == (xb.shape, torch.float32, xb.device)   # a refused input is not remembered


def test_kaiming_initialisation():
    w = Linear(400, 300, gen(0)).w
    assert abs(w.std().item() - math.sqrt(2/400)) < 0.002
    assert torch.equal(Linear(400, 300, gen(0)).b, torch.zeros(300))


# --- ReLU and the losses -------------------------------------------------------------------------------------------
def test_relu_layer():
    r = ReLU()
    assert torch.equal(r(torch.tensor([[-2., 0., 3.]])), torch.tensor([[0., 0., 3.]]))
    assert torch.equal(r.backward(torch.tensor([[5., 5., 5.]])), torch.tensor([[0., 0., 5.]]))
    xr = torch.tensor([[-2., 0., 3.]], requires_grad=True)
    torch.relu(xr).mul(5).sum().backward()
    assert torch.equal(r.backward(torch.full((1, 3), 5.)), xr.grad)
    assert r.backward(torch.ones(1, 3), input_grad=False) is None


def test_mse_layer():
    pred, target = torch.tensor([[1.], [2.], [4.]]), torch.tensor([[2.], [2.], [1.]])
    loss_layer = MSE()
    assert_close(loss_layer(pred, target), torch.tensor(10/3))
    assert_close(loss_layer.backward(), torch.tensor([[-2/3], [0.], [2.]]))
    p_ = pred.clone().requires_grad_()
    F.mse_loss(p_, target).backward()
    assert_close(loss_layer.backward(), p_.grad)


# --- a network -----------------------------------------------------------------------------------------------------
def test_mlp():
    net = mlp([1, 32, 1])
    assert repr(net) == 'Sequential(Linear(1, 32), ReLU(), Linear(32, 1))'
    assert [p.shape for p in net.parameters()] == [(1, 32), (32,), (32, 1), (1,)]
    assert torch.equal(mlp([1, 32, 1]).layers[0].w, net.layers[0].w)       # the same seed gives the same network
    assert not torch.equal(mlp([1, 32, 1], seed=1).layers[0].w, net.layers[0].w)


def test_the_shapes_of_the_chapters_diagram():
    "The picture at the top of the chapter: the source's 20 points through mlp([1, 32, 1])."
    x, y = noisy_quadratic(dtype=torch.float32)
    net, shapes = mlp([1, 32, 1]), [tuple(x.shape)]
    h = x
    for layer in net.layers:
        h = layer(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(20, 1), (20, 32), (20, 32), (20, 1)]
    loss = MSE()
    assert loss(h, y).shape == ()
    g = loss.backward()
    assert g.shape == (20, 1)
    assert net.backward(g, input_grad=False) is None


def autograd_grads(model, torch_loss, x, y):
    "Gradients of every parameter of `model` (and of `x`), computed by torch autograd on a `torch.nn` copy."
    twin, x_ = to_torch(model), x.clone().requires_grad_()
    torch_loss(twin(x_), y).backward()
    return [p.grad.T if p.ndim == 2 else p.grad for p in twin.parameters()], x_.grad


def our_grads(model, loss_layer, x, y):
    "Gradients of every parameter of `model` (and of `x`) from the hand-written backward pass."
    model.zero_grad()
    loss_layer(model(x), y)
    grad_x = model.backward(loss_layer.backward())
    return [p.grad for p in model.parameters()], grad_x


def assert_grads_agree(model, loss_layer, torch_loss, x, y):
    ours, ours_x = our_grads(model, loss_layer, x, y)
    theirs, theirs_x = autograd_grads(model, torch_loss, x, y)
    assert len(ours) == len(theirs) == len(model.parameters())
    for g, t in zip(ours, theirs): close(g, t, 1e-10)
    close(ours_x, theirs_x, 1e-10)
    assert all(g.abs().sum() > 0 for g in ours)  # a real check: no gradient is trivially zero
    return theirs


def test_every_gradient_of_an_mse_network():
    x, y = noisy_quadratic(dtype=torch.float64)
    net64 = mlp([1, 8, 8, 1], dtype=torch.float64)
    theirs = assert_grads_agree(net64, MSE(), F.mse_loss, x, y)
    assert len(theirs) == 6  # a weight and a bias for each of the 3 Linear layers
    # a second call gives the same numbers, because our_grads zeroes first
    again, _ = our_grads(net64, MSE(), x, y)
    for g, t in zip(again, theirs): close(g, t, 1e-10)
    # without zero_grad the new gradient is added to the old
    mse_ = MSE()
    mse_(net64(x), y)
    net64.backward(mse_.backward())
    close(net64.layers[0].w.grad, 2 * theirs[0], 1e-10)
    # skipping the gradient of the input changes none of the parameters' gradients
    net64.zero_grad()
    mse_(net64(x), y)
    assert net64.backward(mse_.backward(), input_grad=False) is None
    for p, t in zip(net64.parameters(), theirs): close(p.grad, t, 1e-10)


def test_every_gradient_of_a_classifier():
    xc = torch.randn(16, 12, generator=gen(2), dtype=torch.float64)
    yc = torch.randint(0, 5, (16,), generator=gen(3))
    netc = mlp([12, 20, 20, 5], dtype=torch.float64)
    assert len(assert_grads_agree(netc, CrossEntropy(), F.cross_entropy, xc, yc)) == 6


def test_to_torch_gives_the_same_function():
    net = mlp([3, 5, 2], seed=4)
    x = torch.randn(6, 3, generator=gen(5))
    close(to_torch(net)(x), net(x), 1e-6)
    close(to_torch(net.layers[0])(x), net.layers[0](x), 1e-6)


# --- softmax and cross-entropy -------------------------------------------------------------------------------------
ZS = torch.randn(5, 10, generator=gen(0)) * 5
LABELS = torch.tensor([3, 0, 9, 9, 1])
Z = torch.tensor([[1000., 999., 0.]])

def test_naive_softmax_overflows_and_ours_does_not():
    naive = Z.exp() / Z.exp().sum(1, keepdim=True)
    assert naive.isnan().any()
    assert_close(softmax(Z), torch.tensor([[1/(1+math.exp(-1)), 1/(1+math.exp(1)), 0.]]))


def test_softmax_and_log_softmax_against_torch():
    close(log_softmax(ZS), F.log_softmax(ZS, dim=1), 1e-5)
    close(softmax(ZS), torch.softmax(ZS, dim=1), 1e-6)
    close(softmax(ZS).sum(1), torch.ones(5), 1e-6)
    close(softmax(ZS.double() + 1000), softmax(ZS.double()), 1e-10)    # shifting every score changes nothing


def test_cross_entropy_against_torch():
    close(cross_entropy(ZS, LABELS), F.cross_entropy(ZS, LABELS), 1e-6)
    close(cross_entropy(torch.zeros(2, 10), torch.tensor([4, 7])), torch.tensor(math.log(10)), 1e-6)  # a uniform guess
    close(cross_entropy(Z, torch.tensor([0])), F.cross_entropy(Z, torch.tensor([0])), 1e-6)
    close(cross_entropy(ZS, LABELS.to(torch.uint8)), F.cross_entropy(ZS, LABELS), 1e-6)
    close(cross_entropy(ZS[:, :3], torch.tensor([0, 2, 1, 1, 0])), F.cross_entropy(ZS[:, :3], torch.tensor([0, 2, 1, 1, 0])), 1e-6)


def test_cross_entropy_layer_gradient_against_autograd():
    ce = CrossEntropy()
    close(ce(ZS, LABELS), F.cross_entropy(ZS, LABELS), 1e-6)
    zs_ = ZS.clone().requires_grad_()
    F.cross_entropy(zs_, LABELS).backward()
    close(ce.backward(), zs_.grad, 1e-6)
    close(ce.backward().sum(1), torch.zeros(5), 1e-6)  # each row: probabilities (sum 1) minus one 1
    ce(ZS, LABELS.int())                                 # any integer dtype
    close(ce.backward(), zs_.grad, 1e-6)


def test_the_training_path_reads_no_values():
    """`forward` and `backward` are the arithmetic alone: on `meta` tensors, which have no values, any read of a value
    (a device sync on a GPU) raises. Only the checked call at the boundary reads the labels."""
    logits, labels = torch.empty(6, 3, device='meta'), torch.empty(6, dtype=torch.int64, device='meta')
    ce = CrossEntropy()
    assert ce.forward(logits, labels).shape == ()
    assert ce.backward().shape == (6, 3)
    with pytest.raises((RuntimeError, NotImplementedError)): ce(logits, labels)   # the check reads the labels once


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU here')
def test_no_sync_on_the_training_path_on_cuda():
    net, ce = mlp([4, 8, 3], device='cuda'), CrossEntropy()
    x, y = torch.randn(5, 4, device='cuda'), torch.tensor([0, 2, 1, 1, 0], device='cuda')
    net(x); ce(net(x), y)                              # the checks at the boundary, once
    torch.cuda.set_sync_debug_mode('error')
    try:
        ce.forward(net(x), y)
        net.backward(ce.backward(), input_grad=False)
    finally: torch.cuda.set_sync_debug_mode('default')


# --- bad input: each mistake is refused with a message naming it ----------------------------------------------------
def test_bad_inputs_to_a_network():
    model = mlp([64, 64, 10], seed=0)
    with pytest.raises(ValueError, match=r'\(5, 3\)'): model(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r'shape \(batch, 64\)'): model(torch.randn(64))
    with pytest.raises(TypeError, match='floating-point'): model(torch.ones(5, 64, dtype=torch.int64))
    with pytest.raises(TypeError, match='torch.Tensor'): model([[0.] * 64])
    with pytest.raises(ValueError, match='empty batch'): model(torch.empty(0, 64))
    with pytest.raises(ValueError, match='at least two'): mlp([64])
    with pytest.raises(ValueError, match='positive whole numbers'): Linear(0, 3)


def test_bad_labels():
    logits = mlp([64, 64, 10], seed=0)(torch.randn(4, 64, generator=gen(4)))
    with pytest.raises(ValueError, match='empty batch'): CrossEntropy()(torch.empty(0, 10), torch.empty(0, dtype=torch.int64))
    with pytest.raises(ValueError, match='from 0 to 10'): CrossEntropy()(logits, torch.tensor([0, 3, 10, 2]))
    with pytest.raises(ValueError, match=r'0\.\.9'): CrossEntropy()(logits, torch.tensor([0, -1, 1, 2]))
    with pytest.raises(TypeError, match='torch.float32'): cross_entropy(logits, torch.tensor([0., 3., 1., 2.]))
    with pytest.raises(TypeError, match='torch.bool'): cross_entropy(logits, torch.tensor([True, False, True, True]))
    with pytest.raises(ValueError, match=r'shape \(3,\)'): CrossEntropy()(logits, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r'shape \(4,\)'): CrossEntropy()(logits, torch.tensor([[0, 3, 1, 2]]))
    with pytest.raises(TypeError, match='torch.Tensor'): CrossEntropy()(logits, [0, 3, 1, 2])
    with pytest.raises(ValueError, match=r'shape \(batch, classes\)'): cross_entropy(logits[0], torch.tensor(0))
    with pytest.raises(ValueError, match="labels are on cpu but logits are on meta"):
        CrossEntropy()(torch.empty(2, 3, device='meta'), torch.tensor([0, 2]))


def test_the_label_check_uses_the_logits_width():
    "Any number of classes is accepted, and the labels are checked against it."
    for classes in (1, 3, 10):
        logits = torch.randn(4, classes, generator=gen(classes))
        labels = torch.tensor([classes - 1, 0, 0, classes - 1])
        close(cross_entropy(logits, labels), F.cross_entropy(logits, labels), 1e-6)
        with pytest.raises(ValueError, match=f'0..{classes - 1}'): cross_entropy(logits, labels + 1)


def test_backward_before_forward_and_wrong_gradients():
    with pytest.raises(RuntimeError, match='call forward first'): Linear(3, 2).backward(torch.ones(4, 2))
    with pytest.raises(RuntimeError, match='call it first'): MSE().backward()
    with pytest.raises(RuntimeError, match='call it first'): CrossEntropy().backward()
    lin = Linear(3, 2); lin(torch.ones(4, 3))
    with pytest.raises(ValueError, match=r'\(4, 2\)'): lin.backward(torch.ones(4, 3))
    with pytest.raises(TypeError, match='MSE'): to_torch(Sequential(Linear(2, 2), MSE()))
    with pytest.raises(NotImplementedError, match='must define forward'): Layer()(torch.ones(1, 1))
    with pytest.raises(NotImplementedError, match='must define backward'): Layer().backward(torch.ones(1, 1))


# --- the chapter's exercises: the stubs as printed get a hint, not an exception ----------------------------------
@pytest.mark.parametrize('name, stub', [('linear_backward', lambda x, w, grad: None), ('softmax', lambda logits: None),
                                        ('cross_entropy', lambda logits, labels: None)])
def test_the_exercise_stubs_get_a_hint(name, stub):
    from neuralwiki.exercises import check
    r = check(stub, name)
    assert not r.passed and 'forget `return`' in r.message, r
