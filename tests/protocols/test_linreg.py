"""In-context regression: data, the error metric and every baseline against explicit per-prompt loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_bench.data.icl.linreg import LinRegParams, generate, load_linreg
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.icl_regression import (
    ICLRegressionParams,
    averaging,
    bootstrap_band,
    gradient_descent,
    least_squares,
    nearest_neighbours,
    online_sgd_last,
    ridge,
    run_icl_regression,
)

D, N_POINTS = 4, 9


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((30, N_POINTS, D))
    ws = rng.standard_normal((30, D))
    ys = np.einsum("pnd,pd->pn", xs, ws) + 0.3 * rng.standard_normal((30, N_POINTS))
    return xs, ys


def per_prompt(xs, ys, fit):
    out = np.zeros(ys.shape)
    for p in range(len(xs)):
        for i in range(1, ys.shape[1]):
            out[p, i] = fit(xs[p, :i], ys[p, :i], xs[p, i])
    return out


def test_least_squares_is_the_min_norm_solution(prompts):
    xs, ys = prompts
    ref = per_prompt(xs, ys, lambda X, y, x: x @ np.linalg.lstsq(X, y, rcond=None)[0])
    np.testing.assert_allclose(least_squares(xs, ys), ref, atol=1e-9)
    assert (least_squares(xs, ys)[:, 0] == 0).all()


def test_ridge_matches_sklearn(prompts):
    from sklearn.linear_model import Ridge

    xs, ys = prompts
    ref = per_prompt(xs, ys, lambda X, y, x: Ridge(alpha=0.09, fit_intercept=False).fit(X, y).predict(x[None])[0])
    np.testing.assert_allclose(ridge(xs, ys, 0.09), ref, atol=1e-8)


def test_knn_and_averaging_match_loops(prompts):
    xs, ys = prompts

    def knn(X, y, x):
        dist = [float(np.sum((row - x) ** 2)) for row in X]
        order = sorted(range(len(X)), key=lambda j: dist[j])[:3]
        return sum(y[j] for j in order) / len(order)

    np.testing.assert_allclose(nearest_neighbours(xs, ys, 3), per_prompt(xs, ys, knn), atol=1e-12)
    avg = per_prompt(xs, ys, lambda X, y, x: x @ (sum(X[j] * y[j] for j in range(len(X))) / len(X)))
    np.testing.assert_allclose(averaging(xs, ys), avg, atol=1e-12)


def test_gradient_descent_matches_a_loop_and_one_unit_step_is_averaging(prompts):
    xs, ys = prompts

    def gd(X, y, x, k=3, eta=0.2):
        w = np.zeros(X.shape[1])
        for _ in range(k):
            grad = sum((X[j] @ w - y[j]) * X[j] for j in range(len(X))) / len(X)
            w = w - eta * grad
        return x @ w

    np.testing.assert_allclose(gradient_descent(xs, ys, 3, 0.2), per_prompt(xs, ys, gd), atol=1e-10)
    np.testing.assert_allclose(gradient_descent(xs, ys, 1, 1.0), averaging(xs, ys), atol=1e-12)


def test_online_sgd_is_order_dependent_and_matches_a_loop(prompts):
    xs, ys = prompts
    ref = []
    for p in range(len(xs)):
        w = np.zeros(D)
        for j in range(N_POINTS - 1):
            w = w - 0.1 * (xs[p, j] @ w - ys[p, j]) * xs[p, j]
        ref.append(xs[p, -1] @ w)
    np.testing.assert_allclose(online_sgd_last(xs, ys, 0.1), ref, atol=1e-12)
    perm = np.r_[np.arange(N_POINTS - 1)[::-1], N_POINTS - 1]
    assert not np.allclose(online_sgd_last(xs[:, perm], ys[:, perm], 0.1), ref)


def test_bootstrap_band_matches_explicit_resampling():
    rng = np.random.default_rng(1)
    sq = rng.exponential(size=(50, 3))
    lo, hi = bootstrap_band(sq, 200, seed=5)
    r = np.random.default_rng(5)
    idx = r.integers(0, 50, size=(200, 50))
    for i in range(3):
        means = sorted(sq[idx[b], i].mean() for b in range(200))
        assert lo[i] == pytest.approx(np.quantile(means, 0.05))
        assert hi[i] == pytest.approx(np.quantile(means, 0.95))
        assert lo[i] < sq[:, i].mean() < hi[i]


def test_data_is_linear_seeded_and_curriculum_zeroes_dims():
    data = generate(LinRegParams(n_dims=3, n_points=5, n_test=40, seed=2))
    np.testing.assert_allclose(data.test.ys, np.einsum("pnd,pd->pn", data.test.xs, data.test.ws), atol=1e-5)
    assert data.fingerprint == generate(LinRegParams(n_dims=3, n_points=5, n_test=40, seed=2)).fingerprint
    assert data.fingerprint != generate(LinRegParams(n_dims=3, n_points=5, n_test=40, seed=3)).fingerprint
    xs, _ = data.train.sample(torch.Generator().manual_seed(0), 8, n_points=4, n_dims_active=2)
    assert xs.shape == (8, 4, 3) and (xs[:, :, 2] == 0).all() and (xs[:, :, :2] != 0).all()
    with pytest.raises(ClBenchError, match="n_dims"):
        load_linreg({"n_dims": 0})


class LeastSquaresModel(torch.nn.Module):
    input_kind = "vectors"

    def regress(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(least_squares(xs.double().numpy(), ys.double().numpy()))


class OnlineSGDModel(torch.nn.Module):
    input_kind = "vectors"

    def __init__(self, eta: float) -> None:
        super().__init__()
        self.eta = eta

    def regress(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        x, y = xs.double().numpy(), ys.double().numpy()
        out = np.zeros(y.shape)
        out[:, -1] = online_sgd_last(x, y, self.eta)
        return torch.as_tensor(out)


def test_protocol_on_a_least_squares_model():
    data = generate(LinRegParams(n_dims=3, n_points=7, n_test=64, seed=0))
    params = ICLRegressionParams(n_bootstrap=50, gd_steps=[1, 4], calibration_prompts=64, order_prompts=16,
                                 order_permutations=3)
    res = run_icl_regression(LeastSquaresModel(), data, params, RunContext(torch.device("cpu"), 0, lambda m, s: None))
    m = res.metrics
    assert m["excess_over_lsq"] == pytest.approx(0, abs=1e-9) and m["dist_to_lsq"] == pytest.approx(0, abs=1e-9)
    assert m["cos_to_lsq"] == pytest.approx(1)
    assert m["mse_last"] == pytest.approx(0, abs=1e-8)  # noiseless, 6 examples > d = 3
    # independent: the curve's first point is E[y^2]/d over the test prompts
    assert res.extras["curve"]["model"][0] == pytest.approx(float(np.mean(data.test.ys[:, 0].astype(float) ** 2) / 3))
    assert m["order_sensitivity"] == pytest.approx(0, abs=1e-10)  # least squares ignores order
    assert m["order_sensitivity_gd"] == pytest.approx(0, abs=1e-10)
    assert m["order_sensitivity_sgd"] > 0
    assert m["lsq_mse_avg"] < m["averaging_mse_avg"] and "ridge_mse_avg" not in m


def test_order_correlation_is_one_for_an_online_sgd_model():
    data = generate(LinRegParams(n_dims=3, n_points=7, n_test=32, noise_std=0.5, seed=0))
    params = ICLRegressionParams(n_bootstrap=20, gd_steps=[1], calibration_prompts=64, order_prompts=16,
                                 order_permutations=4)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: None)
    from cl_bench.protocols import icl_regression as proto

    eta = proto.pick_eta(lambda e: np.square(online_sgd_last(*_calib(data, params), e) - _calib(data, params)[1][:, -1]))[0]
    res = run_icl_regression(OnlineSGDModel(eta), data, params, ctx)
    assert res.metrics["order_corr_sgd"] == pytest.approx(1.0)
    assert "ridge_mse_avg" in res.metrics


def _calib(data, params):
    from cl_bench.data.icl.linreg import sample_prompts

    x, y, _ = sample_prompts(torch.Generator().manual_seed(10_000), params.calibration_prompts, data.n_points,
                             data.n_dims, None, data.noise_std)
    return x.double().numpy(), y.double().numpy()


def test_protocol_refuses_other_models():
    data = generate(LinRegParams(n_dims=2, n_points=3, n_test=4))
    with pytest.raises(ClBenchError, match="regress"):
        run_icl_regression(torch.nn.Linear(1, 1), data, ICLRegressionParams(), RunContext(torch.device("cpu"), 0, None))
