"""The scattering front end of ``scatsimclr``: the Morlet filter bank against a hand computation,
the transform against explicit spatial convolutions and against kymatio, and the encoder."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.image.scattering import (
    Scattering2D,
    coefficients_per_channel,
    filter_bank,
    gabor_2d,
    morlet_2d,
    padded_size,
    periodize_spectrum,
    wavelet_params,
)


def morlet_by_hand(
    M: int, N: int, sigma: float, theta: float, xi: float, slant: float
) -> list[list[complex]]:
    """The Morlet wavelet written out point by point from its definition (pure Python).

    psi(u) = sum over 5x5 periods of g(u + p) (exp(i xi . (u + p)) - beta), g a rotated anisotropic
    Gaussian exp(-(a^2 + slant^2 b^2) / (2 sigma^2)) with (a, b) the coordinates along / across theta,
    normalised by 2 pi sigma^2 / slant; beta makes the filter sum to zero.
    """

    def envelope(x: float, y: float) -> float:
        a = x * math.cos(theta) + y * math.sin(theta)  # along the wave direction
        b = -x * math.sin(theta) + y * math.cos(theta)  # across it
        return math.exp(-(a * a + slant * slant * b * b) / (2 * sigma * sigma)) / (
            2 * math.pi * sigma * sigma / slant
        )

    wave = [[0j] * N for _ in range(M)]
    env = [[0.0] * N for _ in range(M)]
    for r in range(M):
        for c in range(N):
            for pr in range(-2, 3):
                for pc in range(-2, 3):
                    x, y = r + pr * M, c + pc * N
                    g = envelope(x, y)
                    wave[r][c] += g * cmath.exp(1j * xi * (x * math.cos(theta) + y * math.sin(theta)))
                    env[r][c] += g
    beta = sum(map(sum, wave)) / sum(map(sum, env))
    return [[wave[r][c] - beta * env[r][c] for c in range(N)] for r in range(M)]


@pytest.mark.parametrize("j, t", [(0, 0), (0, 3), (1, 5), (1, 7)])
def test_morlet_matches_hand_computation(j: int, t: int) -> None:
    M, N, L = 12, 16, 8
    sigma, theta, xi, slant = wavelet_params(j, t, L)
    assert theta == pytest.approx((3 - t) * math.pi / 8) and xi == pytest.approx(3 * math.pi / 4 / 2**j)
    assert sigma == pytest.approx(0.8 * 2**j) and slant == 0.5
    ours = morlet_2d(M, N, sigma, theta, xi, slant)
    ref = np.array(morlet_by_hand(M, N, sigma, theta, xi, slant))
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert abs(ours.sum()) < 1e-10  # zero mean: no response to constant images


def test_filter_bank_properties() -> None:
    M = N = 16
    J, L = 2, 8
    bank = filter_bank(M, N, J, L)
    phi0 = bank["phi"][0]
    assert phi0[0, 0] == pytest.approx(1.0, abs=1e-3)  # low-pass: unit gain at frequency 0
    assert [p.shape for p in bank["phi"]] == [(16, 16), (8, 8)]
    assert [[lv.shape for lv in levels] for levels in bank["psi"]] == [
        [(8, 16, 16)],
        [(8, 16, 16), (8, 8, 8)],
    ]
    for j in range(J):
        spectra = bank["psi"][j][0]
        assert np.abs(spectra[:, 0, 0]).max() < 1e-6  # band-pass: nothing at frequency 0
        for t in range(L):  # the spectrum peaks near xi in direction theta
            _, theta, xi, _ = wavelet_params(j, t, L)
            f0 = np.fft.fftfreq(M) * 2 * np.pi
            f1 = np.fft.fftfreq(N) * 2 * np.pi
            r, c = np.unravel_index(np.argmax(spectra[t]), spectra[t].shape)
            peak = np.array([f0[r], f1[c]])
            assert (
                np.linalg.norm(peak - xi * np.array([math.cos(theta), math.sin(theta)])) < 2 * np.pi / M * 1.5
            )
    # the spectrum of a Gabor filter is real up to rounding (it is conjugate-symmetric in space)
    g = np.fft.fft2(gabor_2d(M, N, 1.6, 0.0, 0.0))
    assert np.abs(g.imag).max() < 1e-8


def test_periodize_is_subsampling_in_space() -> None:
    """Folding a band-limited spectrum equals subsampling the signal in space."""
    rng = np.random.default_rng(0)
    M = N = 16
    spec = np.zeros((M, N), complex)
    spec[:4, :4] = rng.normal(size=(4, 4))  # only low frequencies (|f| < M/4 along each axis)
    spec[-3:, :4] = rng.normal(size=(3, 4))
    spec[:4, -3:] = rng.normal(size=(4, 3))
    spec[-3:, -3:] = rng.normal(size=(3, 3))
    signal = np.fft.ifft2(spec)
    folded = periodize_spectrum(spec, 1) / 4
    np.testing.assert_allclose(np.fft.ifft2(folded), signal[::2, ::2], atol=1e-12)


def circular_conv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(x * h)[u] = sum_v x[v] h[u - v mod M] by explicit loops over the kernel support."""
    M, N = x.shape
    out = np.zeros((M, N), dtype=complex)
    for a in range(M):
        for b in range(N):
            out += h[a, b] * np.roll(np.roll(x, a, axis=0), b, axis=1)
    return out


def test_transform_matches_explicit_spatial_convolutions() -> None:
    """S0, one first-order and one second-order path of an 8x8 image, computed in space."""
    J, L, H = 2, 8, 8
    rng = np.random.default_rng(1)
    img = rng.random((H, H))
    S = Scattering2D(J, L, (H, H))(torch.tensor(img, dtype=torch.float32)[None, None])[0].double().numpy()
    Mp = padded_size(H, J)
    assert Mp == 16 and S.shape == (coefficients_per_channel(J, L), 2, 2)
    pad = (Mp - H) // 2
    x = np.pad(img, pad, mode="reflect")
    phi = gabor_2d(Mp, Mp, 0.8 * 2 ** (J - 1), 0.0, 0.0)

    def low(u: np.ndarray, res: int = 0) -> np.ndarray:
        """Average by phi_J, subsample to 2^J, crop. A signal already at resolution 2^-res is
        averaged by phi's low-resolution version (its spectrum folded to that grid), in space."""
        kernel = phi if res == 0 else np.fft.ifft2(periodize_spectrum(np.fft.fft2(phi).real, res))
        step = 2 ** (J - res)
        return circular_conv(u, kernel).real[::step, ::step][1:-1, 1:-1]

    np.testing.assert_allclose(S[0], low(x), rtol=1e-4, atol=1e-5)
    psi = {(j, t): morlet_2d(Mp, Mp, *wavelet_params(j, t, L)) for j in range(J) for t in range(L)}
    # first order, path (j1=0, t1=5): index 1 + 5
    u1 = np.abs(circular_conv(x, psi[(0, 5)]))
    np.testing.assert_allclose(S[1 + 5], low(u1), rtol=1e-3, atol=1e-5)
    # first order, path (j1=1, t1=2): |x * psi| kept at resolution 1/2, index 1 + 1*L + 2
    u1 = np.abs(circular_conv(x, psi[(1, 2)]))[::2, ::2]
    np.testing.assert_allclose(S[1 + L + 2], low(u1, res=1), rtol=1e-3, atol=1e-5)
    # second order, path (j1=0, t1=3) -> (j2=1, t2=6): after S0 and J*L first order, t1-major
    u1 = np.abs(circular_conv(x, psi[(0, 3)]))
    u2 = np.abs(circular_conv(u1, psi[(1, 6)]))[::2, ::2]
    np.testing.assert_allclose(S[1 + J * L + 3 * L + 6], low(u2, res=1), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("size, J", [((8, 8), 2), ((32, 32), 2), ((16, 24), 3)])
def test_transform_matches_kymatio(size: tuple[int, int], J: int) -> None:
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D  # reference library

    torch.manual_seed(0)
    x = torch.rand(3, 2, *size)
    ours = Scattering2D(J, 8, size)(x)
    ref = ScatteringTorch2D(J=J, shape=size, L=8)(x).reshape(ours.shape)
    # kymatio normalises its Gaussians with 3.1415 instead of pi: a 3e-5 relative scale difference
    torch.testing.assert_close(ours, ref, rtol=2e-4, atol=2e-5)


def test_encoder_counts_only_the_adapter_and_keeps_filters_out_of_the_state_dict() -> None:
    build = components.get("arch", "scatsimclr")
    enc = build({"J": 2, "L": 8, "width": 64, "blocks": 1}, in_channels=1, image_size=(8, 8))
    k = 81
    by_hand = (2 * k) + (k * 64 * 9) + (2 * 64) + 2 * (64 * 64 * 9 + 2 * 64)  # BN, conv, BN, block
    assert enc.n_trainable_params == by_hand == sum(p.numel() for p in enc.parameters())
    assert not any(name.startswith("scattering") for name in enc.state_dict())
    assert any(name.startswith("scattering.psi_") for name, _ in enc.named_buffers())
    out = enc(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 64) and enc.embed_dim == 64
    rgb = build({}, in_channels=3, image_size=(32, 32))
    assert rgb.feature_maps(torch.rand(2, 3, 32, 32))["scattering"].shape == (2, 3 * 81, 8, 8)
    first_only = build({"max_order": 1}, in_channels=1, image_size=(8, 8))
    assert first_only.n_coefficients == 1 + 2 * 8


def test_scattering_is_stable_to_a_one_pixel_shift_where_pixels_are_not() -> None:
    """The property the front end is chosen for: small translations barely move the coefficients."""
    from cl_bench.data.image.digits import load_digit_arrays

    images, _ = load_digit_arrays()
    x = torch.tensor(images[:64], dtype=torch.float32)[:, None] / 16.0
    shifted = torch.roll(x, 1, dims=3)
    S = Scattering2D(2, 8, (8, 8))
    rel_pix = ((x - shifted).norm() / x.norm()).item()
    rel_scat = ((S(x) - S(shifted)).norm() / S(x).norm()).item()
    assert rel_scat < 0.5 * rel_pix


def test_bad_sizes_are_clear_errors() -> None:
    build = components.get("arch", "scatsimclr")
    with pytest.raises(ClBenchError, match="divisible by 2\\^J"):
        build({"J": 2}, in_channels=1, image_size=(10, 10))
    with pytest.raises(ClBenchError, match="too small for J = 3"):
        build({"J": 3}, in_channels=1, image_size=(8, 8))
    with pytest.raises(ClBenchError, match="arch .scatsimclr. params"):
        build({"L": 0}, in_channels=1, image_size=(8, 8))
