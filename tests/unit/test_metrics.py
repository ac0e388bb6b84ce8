import math

import pytest
import torch

from invedit import metrics


def test_psnr_of_known_error():
    a = torch.zeros(1, 8, 8, 3)
    b = torch.full_like(a, 0.1)  # MSE = 0.01 -> 20 dB
    assert metrics.mse(a, b) == pytest.approx(0.01)
    assert metrics.psnr(a, b) == pytest.approx(20.0)
    assert metrics.max_abs(a, b) == pytest.approx(0.1)
    assert metrics.psnr(a, a) == math.inf


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 8, 8\) vs \(1, 4, 8, 9\)"):
        metrics.mse(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 9))
