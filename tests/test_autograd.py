"""Chapter 5's engine, `neuralwiki.autograd`, against float64 PyTorch and hand-computed numbers.

The chapter keeps one check per example; the batteries are here: bad operands and their messages, powers at 0,
graphs that share leaves or outlive a `backward()`, graphs too deep for recursion, the two classic bugs, the
exercises' stubs, and property-based tests (Hypothesis) on random graphs, with a broken engine that they must catch.
"""
import math

import pytest
import torch
from hypothesis import Phase, given, settings, strategies as st
from micrograd.engine import Value as MicroValue

from neuralwiki.autograd import Value, topo_order, zero_grad
from neuralwiki.exercises import check


def leaf(x): return torch.tensor(x, dtype=torch.float64, requires_grad=True)

def grads(leaves): return [0.0 if v.grad is None else float(v.grad) for v in leaves]

def grads_value(fn, *numbers):
    "The output of `fn` on Values made from `numbers`, and the gradient of each."
    leaves = [Value(n) for n in numbers]
    out = fn(*leaves)
    out.backward()
    return out.data, [v.grad for v in leaves]

def grads_torch(fn, *numbers):
    "The same, by PyTorch's autograd in float64."
    leaves = [leaf(n) for n in numbers]
    out = fn(*leaves)
    out.backward()
    return out.item(), grads(leaves)


def f1(a, b): return (a * b + (a / 4).exp()).tanh() * b - 1 / (b * b + 1)
def f2(a, b): return (a - b).relu() * a + (a * a + 0.5).log()
P1, P2 = (0.7, -1.3), (1.9, 0.4)


def test_numbers_on_either_side():
    v = Value(4.0)
    assert [(2 * v).data, (v * 2).data, (1 - v).data, (v - 1).data, (1 / v).data, (2 + v).data, (-v).data, (v ** 0.5).data] \
        == [8.0, 8.0, -3.0, 3.0, 0.25, 6.0, -4.0, 2.0]


@pytest.mark.parametrize('bad, error, message', [
    (lambda v: v + 'a', TypeError, 'str'),
    (lambda v: v * torch.tensor(2.0), TypeError, r'\.item\(\)'),
    (lambda v: Value([1.0]), TypeError, 'list'),
    (lambda v: v ** Value(2.0), TypeError, 'exponent must be a number'),
    (lambda v: Value(0.0).log(), ValueError, 'positive'),
    (lambda v: Value(-8.0) ** (1/3), ValueError, 'fractional'),
    (lambda v: 2 ** Value(3.0), TypeError, None),                   # no __rpow__: the chapter's exercise 2
    (lambda v: setattr(v, 'gard', 1.0), AttributeError, 'gard'),      # __slots__: a misspelt attribute is an error
    (lambda v: zero_grad([v, 1.0]), TypeError, 'float'),
    (lambda v: topo_order(4.0), TypeError, 'must be a Value'),
])
def test_bad_input_is_refused(bad, error, message):
    with pytest.raises(error, match=message): bad(Value(4.0))


def test_the_record():
    a, b, c = Value(2.0, label='a'), Value(-3.0, label='b'), Value(10.0, label='c')
    d = a * b; d.label = 'd'
    L = d + c; L.label = 'L'
    assert [child.label for child, local in L.inputs] == ['d', 'c']
    assert [(child.label, local) for child, local in d.inputs] == [('a', -3.0), ('b', 2.0)]
    assert (L.op, d.op, a.op, a.inputs) == ('+', '*', '', ())
    L.backward()
    assert [L.grad, d.grad, c.grad, a.grad, b.grad] == [1.0, 1.0, 1.0, -3.0, 2.0]


def test_topological_order():
    a, b = Value(1.0), Value(2.0)
    d = a * b
    e = d + a
    out = (e * d).tanh()
    order = topo_order(out)
    place = {node: i for i, node in enumerate(order)}
    assert len(order) == 6 and order[-1] is out          # a, b, d, e, e*d and its tanh
    assert all(place[child] < place[node] for node in order for child, _ in node.inputs)   # every arrow points right


def test_a_graph_too_deep_for_recursion():
    terms = [Value(float(i)) for i in range(5000)]
    long = sum(terms)                               # 5000 additions in a chain
    assert len(topo_order(long)) == 5000 + 5000     # 5000 leaves and 5000 sums (the first one adds 0)
    long.backward()
    assert long.data == sum(range(5000))
    assert {t.grad for t in terms} == {1.0}
    x = Value(1.0)                                  # 100,500 results, each made from the one before
    total = x
    for _ in range(100_500): total = total + x
    total.backward()
    assert x.grad == 100_501.0


def test_a_neuron_by_hand_and_against_torch():
    def neuron(x1, x2, w1, w2, b): return (x1*w1 + x2*w2 + b).tanh()
    numbers = (2.0, 0.0, -3.0, 1.0, 6.8813735870195432)
    ours, theirs = grads_value(neuron, *numbers), grads_torch(neuron, *numbers)
    assert math.isclose(ours[0], 0.5**0.5, rel_tol=1e-6)
    assert ours[1] == pytest.approx([-1.5, 0.5, 1.0, 0.0, 0.5], abs=1e-6)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-12)


def busy(a, b, c):
    d = a * b + b**3 - 1 / (c*c + 1)
    e = (2 - d).relu() + (d + 3).relu() * a - (-b).tanh()
    f = (e * e + 0.5).log() / 3 + (a / 4).exp() + abs(b - c) + (c*c + 1) ** -0.5
    return 10 * f / (e*e + 2)

@pytest.mark.parametrize('point', [(-4.0, 2.0, 0.5), (1.5, -0.7, 3.0), (0.1, 0.2, -0.3)])
def test_every_operation_against_torch(point):
    ours, theirs = grads_value(busy, *point), grads_torch(busy, *point)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-10)


@pytest.mark.parametrize('k, at', [(0, 0.0), (0, 2.0), (0.5, 0.0), (1.5, 0.0), (2, 0.0), (-1, 2.0)])
def test_powers_against_torch_including_at_zero(k, at):
    assert grads_value(lambda a: a**k, at) == grads_torch(lambda a: a**k, at)


def test_an_infinite_slope_times_a_zero_gradient_is_nan_as_in_torch():
    x, tx = Value(0.0), leaf(0.0)
    (x ** 0.5 * 0.0).backward(); (tx ** 0.5 * 0.0).backward()
    assert math.isnan(x.grad) and math.isnan(tx.grad.item())


@pytest.mark.parametrize('first', [0, 1])
def test_two_graphs_backward_in_either_order(first):
    ours, theirs = [[Value(x) for x in P1], [Value(x) for x in P2]], [[leaf(x) for x in P1], [leaf(x) for x in P2]]
    outs, touts = [f1(*ours[0]), f2(*ours[1])], [f1(*theirs[0]), f2(*theirs[1])]
    for k in (first, 1 - first): outs[k].backward(); touts[k].backward()
    for o, t in zip(ours, theirs): assert grads(o) == pytest.approx(grads(t), rel=1e-12)


def test_two_graphs_sharing_their_leaves_add_up():
    ours, theirs = [Value(x) for x in P1], [leaf(x) for x in P1]
    for o, t in zip((f1(*ours), f2(*ours)), (f1(*theirs), f2(*theirs))):
        o.backward(); t.backward()
        assert grads(ours) == pytest.approx(grads(theirs), rel=1e-12)   # the second adds f2's gradient to f1's


def test_a_result_used_again_after_its_backward():
    ours, theirs = [Value(x) for x in P2], [leaf(x) for x in P2]
    y, ty = f1(*ours), f1(*theirs)
    y.backward(); ty.backward(retain_graph=True)
    z, tz = y * y + ours[0], ty * ty + theirs[0]
    z.backward(); tz.backward()
    assert grads(ours) == pytest.approx(grads(theirs), rel=1e-12)


def test_stale_gradients_on_results_do_not_leak():
    junk = f2(Value(1.0), Value(2.0))   # gradients left on the results of a graph that never went through backward()
    for node in topo_order(junk): node.grad = 7.0
    ours, theirs = [Value(x) for x in P1], [leaf(x) for x in P1]
    f1(*ours).backward(); f1(*theirs).backward()
    assert grads(ours) == pytest.approx(grads(theirs), rel=1e-12)


def backward_overwriting(root):
    "`Value.backward` with the classic bug: `=` where it needs `+=`."
    order = topo_order(root)
    for node in order: node.grad = 0.0
    root.grad = 1.0
    for node in reversed(order):
        for child, local in node.inputs: child.grad = local * node.grad

def test_classic_bug_1_a_node_used_twice():
    a = Value(3.0); backward_overwriting(a + a)
    assert a.grad == 1.0                                     # the bug
    a = Value(3.0); (a + a).backward()
    assert a.grad == 2.0 == grads_torch(lambda a: a + a, 3.0)[1][0]
    a = Value(3.0); backward_overwriting(a * a)
    assert a.grad == 3.0
    a = Value(3.0); (a * a).backward()
    assert a.grad == 6.0
    def two_paths(a, b): return a * b + a.exp()
    wrong = [Value(1.0), Value(2.0)]
    backward_overwriting(two_paths(*wrong))
    right = grads_torch(two_paths, 1.0, 2.0)[1]
    assert grads_value(two_paths, 1.0, 2.0)[1] == pytest.approx(right, rel=1e-12)
    assert not math.isclose(wrong[0].grad, right[0])


def test_classic_bug_2_backward_twice_adds_up_and_zero_grad_resets():
    a = Value(3.0); sq = a * a
    sq.backward(); assert a.grad == 6.0
    sq.backward(); assert a.grad == 12.0
    t = leaf(3.0); tsq = t * t
    tsq.backward(retain_graph=True); tsq.backward()
    assert t.grad.item() == 12.0
    zero_grad([a]); sq.backward(); assert a.grad == 6.0
    zero_grad(a); assert a.grad == 0.0


@pytest.mark.parametrize('Engine, expected', [(Value, 8.0), (MicroValue, 12.0)])
def test_only_leaves_accumulate_unlike_micrograd(Engine, expected):
    x = Engine(1.0); y = (x * 2) * 2
    y.backward(); y.backward()
    assert x.grad == expected   # ours: 4 + 4; micrograd: 4 + (2+2)*2, its stale 2 in x*2 reused


@pytest.mark.parametrize('name', ['tanh', 'sigmoid'])
def test_the_exercise_stubs_get_the_return_hint(name):
    def stub(v): ...
    r = check(stub, name)
    assert not r.passed and 'forget `return`' in r.message, r


# Property-based tests: random graphs, every value and every leaf's gradient against float64 PyTorch.
OPS = {
    'add':  lambda x, y, c: x + y,
    'sub':  lambda x, y, c: x - y,
    'mul':  lambda x, y, c: x * y,
    'div':  lambda x, y, c: x / (y*y + 1),
    'add_c': lambda x, y, c: x + c,
    'rsub_c': lambda x, y, c: c - x,
    'rmul_c': lambda x, y, c: c * x,
    'div_c': lambda x, y, c: x / (abs(c) + 1),
    'rdiv_c': lambda x, y, c: c / (x*x + 1),
    'neg':  lambda x, y, c: -x,
    'pow_int': lambda x, y, c: x ** (2 if c > 0 else 3),
    'pow':  lambda x, y, c: (x*x + 0.5) ** c,
    'relu': lambda x, y, c: x.relu(),
    'abs':  lambda x, y, c: abs(x),
    'tanh': lambda x, y, c: x.tanh(),
    'exp':  lambda x, y, c: (x.tanh() * 2).exp(),
    'log':  lambda x, y, c: (x*x + 0.1).log(),
}

def broken_tanh(x, y, c):
    "tanh with the classic slip in its local derivative: 1 - t instead of 1 - t**2."
    t = math.tanh(x.data)
    return Value(t, ((x, 1 - t),), 'tanh')

BROKEN = {**OPS, 'tanh': broken_tanh}

def build(leaves, steps, ops, limit=100.0):
    "Apply `steps` to the nodes built so far, stopping after the first value larger than `limit`."
    nodes = list(leaves)
    for op, i, j, c in steps:
        nodes.append(ops[op](nodes[i % len(nodes)], nodes[j % len(nodes)], c))
        if abs(float(nodes[-1].data)) > limit: break
    return nodes

def close(x, y): return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))

def matches_torch(values, steps, ops=OPS):
    "Build one random graph from Values (with `ops`) and from float64 tensors: every value and leaf gradient must agree."
    ours = build([Value(v) for v in values], steps, ops)
    theirs = build([leaf(v) for v in values], steps[:len(ours) - len(values)], OPS, math.inf)
    sum(ours[len(values):]).backward()
    sum(theirs[len(values):]).backward()
    for o, t in zip(ours, theirs): assert close(o.data, t.item()), (o.data, t.item())
    for o, t in zip(ours[:len(values)], theirs):
        tgrad = 0.0 if t.grad is None else t.grad.item()
        assert close(o.grad, tgrad), (o.grad, tgrad)

leaf_values = st.lists(st.floats(-2, 2, allow_subnormal=False), min_size=1, max_size=4)
step = st.tuples(st.sampled_from(sorted(OPS)), st.integers(0, 20), st.integers(0, 20), st.floats(-2, 2, allow_subnormal=False))
random_graphs = given(leaf_values, st.lists(step, min_size=1, max_size=8))


@settings(max_examples=1000, deadline=None, database=None)
@random_graphs
def test_a_thousand_random_graphs_match_torch(values, steps):
    matches_torch(values, steps)


def test_the_random_graphs_catch_a_wrong_derivative():
    "The property test must fail on an engine whose tanh has the wrong local derivative."
    first_failure = settings(max_examples=100, deadline=None, database=None, phases=[Phase.generate])
    with pytest.raises(AssertionError):
        first_failure(random_graphs(lambda values, steps: matches_torch(values, steps, BROKEN)))()
