"""Appendix C, `neuralwiki.widgets`: the fitters with and without a loss readout, as chapter 3 uses them.

Chapter 3 lets you fit the curve by eye (`QuadFitter(loss=None)`: the data and the curve, no number) before it
defines the MAE, and only then shows the fitter with its MAE/MSE readout. Both must show their picture without a
kernel: each widget's display carries a PNG of its plot. The browser half is tests/test_browser.py.
"""
import base64

import pytest
import torch
from fastcore.test import test_close as close, test_eq as eq, test_fail as fails  # not test_*: pytest would collect them

from neuralwiki.explorer import Explorer, loss_text
from neuralwiki.gd import gd_step
from neuralwiki.loss import mae, mse, noisy_quadratic, quad, quad_loss
from neuralwiki.widgets import GDStepper, QuadFitter

X, Y = noisy_quadratic()
WIDGET = 'application/vnd.jupyter.widget-view+json'


@pytest.fixture(autouse=True)
def raise_errors(monkeypatch):
    "An error inside a callback fails the test (a reader sees it under the widget instead)."
    monkeypatch.setattr(Explorer, 'raise_errors', True)


def descendants(w):
    "Every widget inside the widget `w`, `w` included."
    yield w
    for child in getattr(w, 'children', ()): yield from descendants(child)


def shows_png(w):
    "The widget's display: the live widget, and a PNG of exactly the plot it shows."
    bundle = w._repr_mimebundle_()
    assert {WIDGET, 'image/png'} <= set(bundle), sorted(bundle)
    png = base64.b64decode(bundle['image/png'])
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and png == w.image.value
    return png


def test_by_eye_shows_the_data_and_the_curve_and_no_number():
    w = QuadFitter(loss=None)
    eq((w.loss_toggle, w.loss_label, w.loss_func, w.loss()), (None, None, None, None))
    html = [c for c in descendants(w.widget) if type(c).__name__ == 'HTML']
    assert all('loss' not in ' '.join(c._dom_classes) for c in html)
    assert not any(type(c).__name__ == 'ToggleButtons' for c in descendants(w.widget))
    eq(list(w.widget.children[0].children[0].children), [*w.sliders.values(), w.reset_button])
    eq([t.get_text() for t in w.ax.get_legend().get_texts()], ['ax²+bx+c', 'data'])
    for text in [w.ax.get_title(), *(t.get_text() for t in w.ax.get_legend().get_texts())]:
        assert 'MAE' not in text and 'MSE' not in text, text
    eq(w.ax.collections[0].get_offsets().data[:, 1], Y.flatten().numpy())  # the source's data, as the chapter plots it
    eq(w.line.get_ydata(), quad(1.1, 1.1, 1.1, w.xs).numpy())
    shows_png(w)


def test_by_eye_redraws_when_a_slider_moves():
    w = QuadFitter(loss=None)
    first = shows_png(w)
    w.sliders['a'].value, w.sliders['b'].value, w.sliders['c'].value = 3.0, 2.0, 1.0
    eq(w.line.get_ydata(), quad(3.0, 2.0, 1.0, w.xs).numpy())
    assert shows_png(w) != first
    w.reset()
    eq(w.current(), [1.1, 1.1, 1.1])
    eq(shows_png(w), first)
    eq(repr(w), 'QuadFitter(a=1.1, b=1.1, c=1.1, loss=None)')  # what to type to get it back
    eq(repr(QuadFitter()), 'QuadFitter(a=1.1, b=1.1, c=1.1)')


def test_the_picture_carries_the_loss():
    """Where no kernel runs only the picture is seen: with a loss it shows the readout (drawn like the curve, on every
    move); by eye it shows none, so the two pictures of the same curve differ."""
    by_eye, scored = QuadFitter(loss=None, a=2.5), QuadFitter(a=2.5)
    assert by_eye.image.value != scored.image.value and not hasattr(by_eye, 'readout')
    eq(scored.readout.get_text(), scored.loss_label.value)
    scored.sliders['a'].value = 3.0
    eq(scored.readout.get_text(), f"MAE = {quad_loss((3.0, 1.1, 1.1), X, Y):.3f}")


def test_the_fitter_with_its_loss():
    "Chapter 3's second fitter: the MAE by default, the MSE with the toggle, always the loss of what is drawn."
    w = QuadFitter()
    eq(w.loss_label.value, 'MAE = 2.422')  # the source's first loss
    w.sliders['a'].value = 3.0
    close(w.line.get_ydata(), quad(3.0, 1.1, 1.1, w.xs).numpy())
    eq(w.loss_label.value, f"MAE = {quad_loss((3.0, 1.1, 1.1), X, Y):.3f}")
    w.loss_toggle.value = 'MSE'
    eq(w.loss_label.value, f"MSE = {quad_loss((3.0, 1.1, 1.1), X, Y, loss_func=mse):.3f}")
    shows_png(w)


def test_the_loss_to_start_with():
    w = QuadFitter(loss='mse', b=2)
    eq(w.loss_toggle.value, 'MSE')
    eq(w.loss_label.value, loss_text('MSE', mse(quad(1.1, 2., 1.1, X), Y)))
    w.loss_toggle.value = 'MAE'
    eq(w.loss_label.value, loss_text('MAE', mae(quad(1.1, 2., 1.1, X), Y)))


def test_a_loss_that_is_not_there_is_refused():
    fails(lambda: QuadFitter(loss='rmse'), contains="loss must be one of ['mae', 'mse'], or None to show no loss; got 'rmse'")
    fails(lambda: QuadFitter(loss='MAE'), contains="got 'MAE'")  # the names of LOSSES, as the command line spells them
    fails(lambda: QuadFitter(loss=None, d=1), contains="unknown parameters ['d']")


def test_the_stepper_needs_a_loss():
    fails(lambda: GDStepper(loss=None), contains="GDStepper descends a loss: loss must be one of ['mae', 'mse'], not None")
    s = GDStepper(loss='mse')  # and descends the one it is given
    s.step()
    p = torch.tensor([1.1, 1.1, 1.1]).requires_grad_()
    gd_step(p, lambda q: quad_loss(q, X, Y, loss_func=mse), 0.01)
    assert torch.equal(s.params, p)
    eq(s.loss_label.value, loss_text('MSE', quad_loss(p, X, Y, loss_func=mse)))
