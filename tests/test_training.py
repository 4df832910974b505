"""Chapter 6, second half (`neuralwiki.training`): minibatches, the training loop against chapter 4's `fit`, the
divergence guard, the noisy quadratic and its network taken apart into ReLUs, the digits, and bad input.

The values asserted are the chapter's: the source's table, chapter 4's autograd, hand-counted batches, and the
figures the chapter prints (MAE 0.86 against the best quadratic's 0.99 and the source's 1.58; 97.5% of the
test digits, nine wrong) and the premise of its exercise on learning rates."""
from functools import partial

import pytest
import torch

from neuralwiki.relu import relu, sum_of_relus
from neuralwiki.loss import noisy_quadratic, mae, mse, quad_loss
from neuralwiki.gd import LossNotFinite, fit, SOURCE_TABLE
from neuralwiki.nn import Linear, MSE, Sequential, mlp, CrossEntropy
from neuralwiki.training import accuracy, batches, confusion, digits, pixel_stats, train, train_step


@pytest.fixture(scope='module')
def data():
    return noisy_quadratic(dtype=torch.float32)


@pytest.fixture(scope='module')
def net(data):
    "The chapter's 1-32-1 network, 1000 steps of gradient descent on the MSE, with its history."
    x, y = data
    model = mlp([1, 32, 1], seed=0)
    return model, train(model, MSE(), x, y, lr=0.03, epochs=1000, progress=False)


@pytest.fixture(scope='module')
def digit_net():
    "The chapter's 64-64-10 digits network, 15 epochs of SGD, with the data and its history."
    x_train, y_train, x_test, y_test = digits()
    model = mlp([64, 64, 10], seed=0)
    before = accuracy(model(x_test), y_test)
    history = train(model, CrossEntropy(), x_train, y_train, lr=0.1, epochs=15, bs=32, progress=False)
    return model, history, before, (x_train, y_train, x_test, y_test)


# ---------------------------------------------------------------------------------------------------------------
# Minibatches

def test_one_batch_is_all_the_data_in_order():
    assert [b.tolist() for b in batches(5)] == [[0, 1, 2, 3, 4]]
    assert [b.tolist() for b in batches(5, bs=5)] == [[0, 1, 2, 3, 4]]
    assert [b.tolist() for b in batches(3, bs=10)] == [[0, 1, 2]]


def test_minibatches_cover_every_example_once():
    bs = list(batches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in bs] == [4, 4, 2]
    assert sorted(torch.cat(bs).tolist()) == list(range(10))
    again = list(batches(10, 4, torch.Generator().manual_seed(0)))   # one seed, one shuffle
    assert all(torch.equal(a, b) for a, b in zip(bs, again))
    assert torch.cat(bs).tolist() != list(range(10))   # shuffled
    assert torch.cat(bs).tolist() == torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()


# ---------------------------------------------------------------------------------------------------------------
# The loop is chapter 4's

def test_train_is_fit_for_a_straight_line(data):
    "Ten steps of our backward pass on Linear(1, 1) give chapter 4's autograd losses and parameters."
    x, y = data
    line = Sequential(Linear(1, 1, torch.Generator().manual_seed(0)))
    wb = torch.cat([line.layers[0].w.flatten(), line.layers[0].b]).clone().requires_grad_()
    ours = train(line, MSE(), x, y, lr=0.05, epochs=10, progress=False)
    theirs = fit(wb, lambda p: mse(x*p[0] + p[1], y), lr=0.05, steps=10, progress=False)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert torch.allclose(wb.detach(), torch.cat([line.layers[0].w.flatten(), line.layers[0].b]), rtol=1e-5)
    assert [round(v, 3) for v in ours[:3]] == [37.966, 33.439, 29.807]


def test_train_step_returns_the_loss_before_its_step(data):
    x, y = data
    line = Sequential(Linear(1, 1, torch.Generator().manual_seed(0)))
    before = MSE()(line(x), y).item()
    assert train_step(line, MSE(), x, y, 0.05) == pytest.approx(before)
    assert MSE()(line(x), y).item() < before


def test_divergence_stops_before_the_bad_step(data):
    "The guard names the epoch and leaves exactly the parameters that one epoch less of training gives."
    x, y = data
    diverging = mlp([1, 32, 1])
    with pytest.raises(LossNotFinite, match=r'^epoch (\d+): the step with lr=\S+ would make a parameter infinite or nan: gradient descent stopped') as e:
        train(diverging, MSE(), x, y, lr=10., epochs=50, progress=False)
    failed_at = int(str(e.value).split(':')[0].removeprefix('epoch '))
    assert failed_at == 3   # the chapter prints it
    reference = mlp([1, 32, 1])
    train(reference, MSE(), x, y, lr=10., epochs=failed_at, progress=False)   # every step before the failing one
    for p, q in zip(diverging.parameters(), reference.parameters()):
        assert torch.isfinite(p).all() and torch.equal(p, q)


# ---------------------------------------------------------------------------------------------------------------
# The noisy quadratic

def test_the_network_beats_every_quadratic_on_the_data(data, net):
    x, y = data
    model, history = net
    net_mae = mae(model(x), y).item()
    assert len(history) == 1000 and history[-1] < history[0] / 10
    x0, y0 = noisy_quadratic()
    source10 = fit(torch.tensor([1.1, 1.1, 1.1]).requires_grad_(), partial(quad_loss, x=x0, target=y0), lr=0.01, steps=10,
                   accumulate=True, progress=False)
    assert f'{source10[-1]:.2f}' == SOURCE_TABLE.splitlines()[-1].split('=')[-1] == '1.58'   # the source's last line
    best_quad = fit(torch.tensor([1.1, 1.1, 1.1]).requires_grad_(), partial(quad_loss, x=x0, target=y0), lr=0.01, steps=2000,
                    progress=False)[-1]
    assert (round(net_mae, 2), round(best_quad, 2)) == (0.86, 0.99)
    assert net_mae < best_quad < source10[-1]


def test_the_network_is_a_sum_of_relus(net):
    "Chapter 2's sum_of_relus with the network's parameters is the network; the bends are where the chapter says."
    model, _ = net
    first, last = model.layers[0], model.layers[2]
    ms, bs, ws, bias = first.w[0], first.b, last.w[:, 0], last.b[0].item()
    xs = torch.linspace(-2.5, 2.5, 200)
    assert torch.allclose(sum_of_relus(ms, bs, xs, ws) + bias, model(xs[:, None])[:, 0], atol=1e-4)
    bends = -bs / ms
    assert ((bends > -1.45) & (bends < -1.3)).sum() == 6, bends   # "six gathered near x = -1.4"
    assert (bends.abs() < 0.3).sum() >= 16, bends                  # "most of the others stayed near 0"
    contributions = (ws * relu(xs[:, None] * ms + bs)).abs().amax(0)
    assert (contributions < 0.1).sum() >= 3, contributions         # "several neurons add only a few hundredths"


def test_without_relu_a_straight_line(data, net):
    x, y = data
    g0 = torch.Generator().manual_seed(0)
    no_relu = Sequential(Linear(1, 32, g0), Linear(32, 1, g0))
    train(no_relu, MSE(), x, y, lr=0.01, epochs=500, progress=False)
    ys = no_relu(torch.linspace(-2.5, 2.5, 100)[:, None]).ravel()
    assert torch.allclose(ys[1:] - ys[:-1], (ys[1] - ys[0]).expand(99), atol=1e-4)   # equal steps: a straight line
    no_relu_mae, net_mae = mae(no_relu(x), y).item(), mae(net[0](x), y).item()
    assert round(no_relu_mae, 2) == 3.17 and no_relu_mae > 2 * net_mae


# ---------------------------------------------------------------------------------------------------------------
# The digits

def test_digits_split_and_standardise():
    x_train, y_train, x_test, y_test = digits()
    raw_train, raw_y, raw_test, raw_y_test = digits(standardize=False)
    assert [x_train.shape, x_test.shape, y_train.shape, y_test.shape] == [(1437, 64), (360, 64), (1437,), (360,)]
    assert torch.equal(raw_y, y_train) and torch.equal(raw_y_test, y_test) and set(y_test.tolist()) == set(range(10))
    assert (raw_train.min(), raw_train.max()) == (0, 16) and torch.equal(raw_train, raw_train.round())
    assert torch.allclose(x_train.mean(0), torch.zeros(64), atol=1e-5)
    mean, std = pixel_stats(raw_train)
    assert torch.equal(x_train, (raw_train - mean) / std) and torch.equal(x_test, (raw_test - mean) / std)
    blank = raw_train.std(0) == 0   # pixels blank in every training image: divided by 1, so they stay 0
    assert blank.any() and torch.equal(std[blank], torch.ones(int(blank.sum()))) and (x_train[:, blank] == 0).all()
    assert torch.allclose(std[~blank], raw_train[:, ~blank].std(0))
    assert not torch.equal(digits(seed=1)[1], y_train)   # another seed, another split


def test_pixel_stats_by_hand():
    mean, std = pixel_stats(torch.tensor([[0., 2., 5.], [0., 4., 5.]]))
    assert mean.tolist() == [0., 3., 5.] and std.tolist() == pytest.approx([1., 2 ** 0.5, 1.])


def test_accuracy_and_confusion_by_hand():
    logits = torch.tensor([[2., 1., 0.], [0., 3., 1.], [1., 0., 4.], [5., 1., 0.]])
    labels = torch.tensor([0, 1, 1, 2])
    assert accuracy(logits, labels) == 0.5
    assert confusion(logits.argmax(1), labels, n=3).tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


def test_the_digits_network_learns(digit_net):
    model, history, before, (_, _, x_test, y_test) = digit_net
    test_acc = accuracy(model(x_test), y_test)
    assert before < 0.2, before      # untrained: a guess, about 1 in 10
    assert test_acc >= 0.95, test_acc
    assert (f'{before:.1%}', f'{test_acc:.1%}') == ('7.5%', '97.5%')   # the chapter prints them
    assert len(history) == 15 and history[-1] < history[0] / 5
    preds = model(x_test).argmax(1)
    cm = confusion(preds, y_test)
    assert cm.sum() == len(y_test) and cm.diag().sum() / len(y_test) == pytest.approx(test_acc)
    assert torch.equal(cm.sum(1), torch.bincount(y_test, minlength=10))
    assert torch.equal(cm.sum(0), torch.bincount(preds, minlength=10))
    mistakes = cm - torch.diag(cm.diag())
    assert mistakes.sum() == 9                                        # "the nine it got wrong"
    assert (mistakes >= 2).nonzero().tolist() == [[9, 5]] and mistakes.max() == 2   # "only one mix-up happens twice, 9 read as 5"


def test_exercise_learning_rates(digit_net):
    "Exercise 3's rates on the digits network: 0.01 to 1 train, 10 diverges at once, refused with the guard's message."
    _, _, _, (x_train, y_train, x_test, y_test) = digit_net
    model = mlp([64, 64, 10], seed=0)
    train(model, CrossEntropy(), x_train, y_train, lr=1., epochs=15, bs=32, progress=False)
    assert accuracy(model(x_test), y_test) > 0.9
    for hidden in (16, 64, 256):
        with pytest.raises(LossNotFinite, match=r'^epoch 0: the step with lr=10.0 would make a parameter infinite'):
            train(mlp([64, hidden, 10], seed=0), CrossEntropy(), x_train, y_train, lr=10., epochs=15, bs=32, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: refused before the first step, the model untouched

@pytest.mark.parametrize('kwargs, labels, message', [
    ({}, 'bad', 'got values from 0 to 12'),
    ({}, 'short', r'\(100,\)'),
    ({'lr': -1}, None, 'positive finite'),
    ({'lr': float('nan')}, None, 'positive finite'),
    ({'bs': 0}, None, 'batch size'),
    ({'epochs': 1.5}, None, 'epochs'),
])
def test_train_refuses_bad_input_untouched(digit_net, kwargs, labels, message):
    model, _, _, (x_train, y_train, _, _) = digit_net
    y = y_train.clone()
    if labels == 'bad': y[-1] = 12   # the very last label: still refused before any step
    if labels == 'short': y = y[:100]
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message): train(model, CrossEntropy(), x_train, y, progress=False, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_train_refuses_an_empty_batch_and_allows_zero_epochs(data):
    with pytest.raises(ValueError, match='empty batch'):
        train(mlp([64, 10]), CrossEntropy(), torch.empty(0, 64), torch.empty(0, dtype=torch.int64), progress=False)
    x, y = data
    model = mlp([1, 4, 1])
    before = [p.clone() for p in model.parameters()]
    assert train(model, MSE(), x, y, epochs=0, progress=False) == []
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
