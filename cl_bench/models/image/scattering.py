"""``scatsimclr``: a fixed 2-D scattering transform front end + a small trainable adapter.

ScatSimCLR (Kinakh, Taran, Voloshynovskiy, ICCV-W 2021) replaces most of a ResNet by the
scattering transform of Bruna & Mallat: cascades of Morlet wavelet convolutions and moduli,
averaged by a Gaussian low-pass, which are fixed (no parameters) and stable to small
deformations. Only a small adapter network on top is trained.

Scattering (``J`` scales, ``L`` orientations, order 2), per input channel::

    S0 x = x * phi_J
    S1 x = |x * psi_{j1,t1}| * phi_J                              (J L paths)
    S2 x = ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi_J,  j2 > j1   (L^2 J (J-1) / 2 paths)

subsampled by 2^J, so [B, C, H, W] -> [B, C (1 + J L + L^2 J (J-1)/2), H / 2^J, W / 2^J]
(81 coefficients per channel for J = 2, L = 8). Filters are the standard Morlet design of the
scattering literature (the one kymatio uses): psi_{j,t} has sigma = 0.8 * 2^j, centre frequency
xi = 3 pi / 4 / 2^j, orientation (L/2 - 1 - t) pi / L, slant 4 / L, and is made exactly zero-mean;
phi_J is a Gaussian with sigma = 0.8 * 2^(J-1). Convolutions are circular, done in Fourier on the
input reflect-padded to a multiple of 2^J; subsampling by k is a periodisation of the spectrum.
Filters are non-persistent buffers: the state dict holds only the adapter.

Adapter: BatchNorm on the coefficients, a 3x3 conv to ``width`` channels, ``blocks`` residual
blocks, global average pooling; ``embed_dim = width``. ``n_trainable_params`` reports the count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.models.image.small_resnet import BasicBlock
from cl_bench.specs import validate_params

# ------------------------------------------------------------------------------- filter bank


def gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """Complex Gabor filter on an M x N grid, periodised over 5 x 5 periods (complex128).

    g(u) = exp(-u^T R D R^T u / (2 sigma^2) + i xi (u_0 cos theta + u_1 sin theta)) / (2 pi sigma^2 / slant),
    with R the rotation by theta and D = diag(1, slant^2); u_0 runs along rows, u_1 along columns.
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    curv = rot @ np.diag([1.0, slant * slant]) @ rot.T / (2.0 * sigma * sigma)
    out = np.zeros((M, N), dtype=np.complex128)
    for ex in range(-2, 3):
        u0 = (np.arange(M) + ex * M)[:, None].astype(np.float64)
        for ey in range(-2, 3):
            u1 = (np.arange(N) + ey * N)[None, :].astype(np.float64)
            quad = curv[0, 0] * u0 * u0 + (curv[0, 1] + curv[1, 0]) * u0 * u1 + curv[1, 1] * u1 * u1
            out += np.exp(-quad + 1j * xi * (u0 * c + u1 * s))
    return out / (2.0 * math.pi * sigma * sigma / slant)


def morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """Morlet wavelet: the Gabor filter minus the multiple of its envelope that makes it zero-mean."""
    wave = gabor_2d(M, N, sigma, theta, xi, slant)
    envelope = gabor_2d(M, N, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def periodize_spectrum(x_hat: np.ndarray, res: int) -> np.ndarray:
    """A filter's spectrum at resolution 2^-res: keep the band that fits, fold it to (M/2^res, N/2^res)."""
    if res == 0:
        return x_hat.copy()
    M, N = x_hat.shape
    k = 2**res
    x = x_hat.copy()
    x[int(M * 2.0 ** (-res - 1)) : int(M * 2.0 ** (-res - 1)) + int(M * (1 - 2.0**-res)), :] = 0
    x[:, int(N * 2.0 ** (-res - 1)) : int(N * 2.0 ** (-res - 1)) + int(N * (1 - 2.0**-res))] = 0
    return x.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


def wavelet_params(j: int, t: int, L: int) -> tuple[float, float, float, float]:
    """(sigma, theta, xi, slant) of the Morlet wavelet at scale j and orientation index t."""
    return 0.8 * 2**j, (int(L - L / 2 - 1) - t) * math.pi / L, 3.0 / 4.0 * math.pi / 2**j, 4.0 / L


def filter_bank(M: int, N: int, J: int, L: int) -> dict[str, list[np.ndarray]]:
    """Real Fourier transforms of the filters on the padded M x N grid, at every needed resolution.

    ``phi[r]`` is phi_J at resolution r (r = 0..J-1); ``psi[j][r]`` stacks the L orientations of
    scale j at resolution r (r = 0..j; the second order needs psi_{j2} at resolution j1 < j2).
    """
    phi_hat = np.real(np.fft.fft2(gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    phi = [periodize_spectrum(phi_hat, r) for r in range(J)]
    psi: list[list[np.ndarray]] = []
    for j in range(J):
        spectra = [np.real(np.fft.fft2(morlet_2d(M, N, *wavelet_params(j, t, L)))) for t in range(L)]
        psi.append([np.stack([periodize_spectrum(s, r) for s in spectra]) for r in range(j + 1)])
    return {"phi": phi, "psi": psi}


def padded_size(size: int, J: int) -> int:
    """The padded side: the next multiple of 2^J above ``size + 2^J`` (room for the border)."""
    return ((size + 2**J) // 2**J + 1) * 2**J


def coefficients_per_channel(J: int, L: int, max_order: int = 2) -> int:
    return 1 + J * L + (L * L * J * (J - 1) // 2 if max_order == 2 else 0)


# ------------------------------------------------------------------------------- transform


def _subsample(x_hat: torch.Tensor, k: int) -> torch.Tensor:
    """Spectrum of the signal subsampled by k along both spatial axes (periodise the spectrum)."""
    if k == 1:
        return x_hat
    m, n = x_hat.shape[-2] // k, x_hat.shape[-1] // k
    rows = x_hat[..., :m, :]
    for a in range(1, k):  # summing k^2 contiguous blocks is much faster than a strided mean
        rows = rows + x_hat[..., a * m : (a + 1) * m, :]
    out = rows[..., :n]
    for b in range(1, k):
        out = out + rows[..., b * n : (b + 1) * n]
    return out / (k * k)


def _times_real(x_hat: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """A complex spectrum times a real filter, in real arithmetic (half the work of a complex product)."""
    return torch.view_as_complex(torch.view_as_real(x_hat) * f.unsqueeze(-1))


class Scattering2D(nn.Module):
    """The order-1 or order-2 2-D scattering transform of [B, C, H, W] images (no parameters)."""

    def __init__(self, J: int, L: int, image_size: tuple[int, int], max_order: int = 2) -> None:
        super().__init__()
        H, W = image_size
        if H % 2**J or W % 2**J:
            raise ClBenchError(f"arch scatsimclr: image size {H}x{W} must be divisible by 2^J = {2**J}")
        self.J, self.L, self.max_order = J, L, max_order
        self.Mp, self.Np = padded_size(H, J), padded_size(W, J)
        self.pads = ((self.Np - W) // 2, (self.Np - W + 1) // 2, (self.Mp - H) // 2, (self.Mp - H + 1) // 2)
        if max(self.pads[2:]) >= H or max(self.pads[:2]) >= W:
            raise ClBenchError(
                f"arch scatsimclr: images of {H}x{W} are too small for J = {J} (reflect padding of "
                f"{max(self.pads)} px); use a smaller J"
            )
        bank = filter_bank(self.Mp, self.Np, J, L)
        for r, f in enumerate(bank["phi"]):
            self.register_buffer(f"phi_{r}", torch.tensor(f, dtype=torch.float32), persistent=False)
        for j, levels in enumerate(bank["psi"]):
            for r, f in enumerate(levels):
                self.register_buffer(f"psi_{j}_{r}", torch.tensor(f, dtype=torch.float32), persistent=False)
        self.out_per_channel = coefficients_per_channel(J, L, max_order)
        self.chunk = 24

    def _filter(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    def _low_pass(self, u_hat: torch.Tensor, res: int) -> torch.Tensor:
        """Average by phi_J at resolution ``res``, subsample to 2^J, back to space, crop the border."""
        s = torch.fft.ifft2(
            _subsample(_times_real(u_hat, self._filter(f"phi_{res}")), 2 ** (self.J - res))
        ).real
        return s[..., 1:-1, 1:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        maps = x.reshape(B * C, H, W).float()
        if maps.device.type != "cpu":
            coeffs = self._transform(maps)
        else:
            # On CPU: small chunks keep the [maps, L, L, m, n] second-order spectra in cache (about
            # 4x faster), and one thread - the many small FFT/elementwise ops lose far more to
            # thread synchronisation than they gain (60x slower with 2 threads on busy cores).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                step = self.chunk
                coeffs = torch.cat([self._transform(maps[i : i + step]) for i in range(0, len(maps), step)])
            finally:
                torch.set_num_threads(threads)
        return coeffs.reshape(B, C * self.out_per_channel, *coeffs.shape[-2:])

    def _transform(self, maps: torch.Tensor) -> torch.Tensor:
        """[n, H, W] single-channel maps -> [n, K, H / 2^J, W / 2^J] coefficients."""
        x = nn.functional.pad(maps[:, None], self.pads, mode="reflect")[:, 0]
        u0 = torch.fft.fft2(x)
        out = [self._low_pass(u0, 0)[:, None]]  # [BC, 1, h, w]
        first_order: list[torch.Tensor] = []
        second_order: list[torch.Tensor] = []
        u1_by_scale: list[torch.Tensor] = []
        for j1 in range(self.J):
            u1 = torch.fft.ifft2(
                _subsample(_times_real(u0[:, None], self._filter(f"psi_{j1}_0")), 2**j1)
            ).abs()
            u1_hat = torch.fft.fft2(u1)  # [BC, L, M/2^j1, N/2^j1]
            u1_by_scale.append(u1_hat)
            first_order.append(self._low_pass(u1_hat, j1))
        if self.max_order == 2:
            for j1 in range(self.J):
                u1_hat = u1_by_scale[j1]
                per_j2 = []
                for j2 in range(j1 + 1, self.J):
                    prod = _times_real(
                        u1_hat[:, :, None], self._filter(f"psi_{j2}_{j1}")
                    )  # [BC, L1, L2, m, n]
                    u2 = torch.fft.ifft2(_subsample(prod, 2 ** (j2 - j1))).abs()
                    per_j2.append(self._low_pass(torch.fft.fft2(u2), j2))  # [BC, L1, L2, h, w]
                if per_j2:
                    # order: for each first-order path (t1), every (j2, t2) with j2 > j1
                    second_order.append(torch.cat(per_j2, dim=2).flatten(1, 2))
        return torch.cat(out + first_order + second_order, dim=1)


# ------------------------------------------------------------------------------- encoder


class ScatSimCLRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    J: int = Field(default=2, ge=1, le=6)
    L: int = Field(default=8, ge=1, le=16)
    max_order: int = Field(default=2, ge=1, le=2)
    width: int = Field(default=64, ge=1, le=1024)
    blocks: int = Field(default=1, ge=0, le=16)


class ScatSimCLREncoder(ImageEncoder):
    """Fixed scattering front end + trainable adapter; ``n_trainable_params`` counts the adapter."""

    arch_name = "scatsimclr"

    def __init__(self, in_channels: int, image_size: tuple[int, int], p: ScatSimCLRParams) -> None:
        super().__init__()
        self.scattering = Scattering2D(p.J, p.L, image_size, p.max_order)
        k = in_channels * self.scattering.out_per_channel
        self.adapter = nn.Sequential(
            nn.BatchNorm2d(k),
            nn.Conv2d(k, p.width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(p.width),
            nn.ReLU(inplace=True),
            *[BasicBlock(p.width, p.width, 1) for _ in range(p.blocks)],
        )
        for m in self.adapter.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.embed_dim = p.width
        self.n_coefficients = k

    @property
    def n_trainable_params(self) -> int:
        return sum(t.numel() for t in self.parameters() if t.requires_grad)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.scattering(images)
        return {"scattering": s, "adapter": self.adapter(s)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.scattering(images)).mean(dim=(2, 3))


@register("arch", "scatsimclr")
def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> ScatSimCLREncoder:
    """Build ``scatsimclr`` (scattering J, L + adapter width/blocks) from its YAML params."""
    p: ScatSimCLRParams = validate_params(ScatSimCLRParams, params, where="arch scatsimclr")
    return ScatSimCLREncoder(in_channels, tuple(image_size), p)
