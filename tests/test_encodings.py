"""Fourier features follow the official code exactly: bands, channel order, widths."""

import numpy as np
import pytest

from suite.models.encodings import fourier_features, fourier_width, grid_positions


def test_grid_positions_span_minus_one_to_one_with_endpoints_row_major():
    pos = grid_positions((2, 3))
    expected = np.array(
        [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]], dtype=np.float32
    )
    np.testing.assert_allclose(pos, expected)


def test_fourier_features_match_hand_computed_values_and_channel_order():
    x = np.array([[0.5, -0.25]], dtype=np.float32)  # one 2-d position
    ff = fourier_features(x, num_bands=3, max_resolution=(8, 4))
    # Bands: linspace(1, mu/2, K): [1, 2.5, 4] for dim 1, [1, 1.5, 2] for dim 2.
    f1, f2 = np.array([1.0, 2.5, 4.0]), np.array([1.0, 1.5, 2.0])
    s = np.concatenate([np.pi * f1 * 0.5, np.pi * f2 * -0.25])
    expected = np.concatenate([[0.5, -0.25], np.sin(s), np.cos(s)])
    assert ff.shape == (1, 2 * (2 * 3 + 1))
    np.testing.assert_allclose(ff[0], expected, rtol=1e-6, atol=1e-6)


def test_sine_only_drops_the_cosines_and_concat_pos_false_drops_raw_positions():
    x = np.array([[0.3, 0.7]], dtype=np.float32)
    full = fourier_features(x, 4, (10,))
    sine = fourier_features(x, 4, (10,), sine_only=True)
    bare = fourier_features(x, 4, (10,), concat_pos=False)
    np.testing.assert_allclose(sine[0], full[0, : 2 + 8])
    np.testing.assert_allclose(bare[0], full[0, 2:])
    assert sine.shape[-1] == fourier_width(2, 4, concat_pos=True, sine_only=True) == 10
    assert bare.shape[-1] == fourier_width(2, 4, concat_pos=False, sine_only=False) == 16


@pytest.mark.parametrize("d,k", [(1, 1), (2, 64), (3, 8)])
def test_width_is_d_times_2k_plus_1(d, k):
    x = np.zeros((5, d), dtype=np.float32)
    assert fourier_features(x, k, (16.0,) * d).shape == (5, d * (2 * k + 1))


def test_imagenet_features_are_258_wide_with_top_band_at_nyquist():
    pos = grid_positions((224, 224))
    ff = fourier_features(pos, 64, (224, 224))
    assert ff.shape == (224 * 224, 258)
    # At x = 1, the top band (112) gives sin(112 pi) = 0 and cos = 1.
    last = ff[-1]
    np.testing.assert_allclose(last[2 + 63], 0.0, atol=1e-3)
    np.testing.assert_allclose(last[2 + 128 + 63], 1.0, atol=1e-3)
