"""plots.loss_chart (the Loss Chart node's drawing): an IMAGE tensor whose curve goes where the values say."""
import math

import torch

from invedit import plots

CURVE = torch.tensor(plots.CURVE) / 255.0


def curve_mask(img):
    return (img[0] - CURVE).abs().sum(-1) < 0.05


def test_the_chart_is_an_image_with_the_curve_falling_left_to_right():
    img = plots.loss_chart(list(range(20)), [10.0 - 0.5 * i for i in range(20)], "DOODL: loss", 400, 200)
    assert img.shape == (1, 200, 400, 3) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    ys, xs = torch.nonzero(curve_mask(img), as_tuple=True)
    assert xs.numel() > 100
    left, right = ys[xs < xs.min() + 10].float().mean(), ys[xs > xs.max() - 10].float().mean()
    assert left < right  # a falling loss: high (small row index) on the left, low on the right
    rising = plots.loss_chart(list(range(20)), [float(i) for i in range(20)], "x", 400, 200)
    ys2, xs2 = torch.nonzero(curve_mask(rising), as_tuple=True)
    assert ys2[xs2 < xs2.min() + 10].float().mean() > ys2[xs2 > xs2.max() - 10].float().mean()


def test_non_finite_and_non_positive_values_are_left_out_not_fatal():
    vals = [1.0, math.nan, 0.5, math.inf, 0.25]
    assert curve_mask(plots.loss_chart(list(range(5)), vals)).any()
    assert curve_mask(plots.loss_chart(list(range(3)), [0.0, -1.0, 2.0], log_scale=True)).any()
    empty = plots.loss_chart([], [])
    assert not curve_mask(empty).any() and empty.shape == (1, 256, 512, 3)
    flat = plots.loss_chart([0, 1, 2], [3.0, 3.0, 3.0])
    assert curve_mask(flat).any()  # a constant loss still draws (a flat line mid-height)
