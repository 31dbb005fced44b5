"""Fitted ladders: the 'fitted' schedule, polydiff.tuning.fit_ladder on an exact denoiser, and `polydiff ladder`."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from polydiff import samplers as S
from polydiff import schedules as L
from polydiff.cli import cli
from polydiff.errors import PolydiffError
from polydiff.gmm import GaussianMixture
from polydiff.metrics import sliced_wasserstein
from polydiff.tuning import candidate_ladders, fit_ladder, ladder_distance


def test_fitted_ladder_gives_its_levels_and_stretches_to_other_step_counts():
    levels = [40.0, 9.0, 2.5, 0.7, 0.1]
    exact = L.fitted(5, sigmas=levels)
    assert exact.tolist() == pytest.approx(levels + [0.0], rel=1e-6)
    for n in (1, 2, 3, 8, 17):
        s = L.fitted(n, sigmas=levels)
        assert s.shape == (n + 1,) and s[-1] == 0 and bool((s[:-1] > s[1:]).all()), (n, s)
        assert float(s[0]) == pytest.approx(40.0, rel=1e-6)
        if n > 1:
            assert float(s[-2]) == pytest.approx(0.1, rel=1e-6)
    # log-linear between the stored levels: 9 steps over 5 levels put a level halfway (in log) between each pair
    mid = L.fitted(9, sigmas=levels)[1]
    assert float(mid) == pytest.approx((40.0 * 9.0) ** 0.5, rel=1e-5)


@pytest.mark.parametrize("bad", [None, [1.0], [1.0, 2.0], [3.0, 3.0], [3.0, -1.0, 0.5]])
def test_fitted_ladder_refuses_missing_or_unordered_levels(bad):
    with pytest.raises(ValueError):
        L.fitted(4, sigmas=bad)


def _mixture():
    means = torch.tensor([[-2.0, 0.0], [0.0, 1.5], [2.0, -0.5]], dtype=torch.float64)
    return GaussianMixture(means, torch.tensor([0.08, 0.3, 0.15], dtype=torch.float64),
                           torch.tensor([0.6, 0.25, 0.15], dtype=torch.float64))


def _sampler_and_reference(sampler, sigma_max: float, n: int = 1024):
    """``sample(sigmas)`` from 1,024 fixed starting points of the mixture, and a 100-step Heun solve from them."""
    gmm = _mixture()
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    fine = L.karras(100, 0.002, sigma_max)
    return (lambda sig: sampler(gmm, z * sig[0], sig)), S.heun(gmm, z * fine[0], fine)


def test_fit_ladder_beats_its_start_on_fresh_noise():
    gmm = _mixture()
    z = torch.randn(2048, 2, generator=torch.Generator().manual_seed(1))
    fine = L.karras(200, 0.002, 80.0)
    reference = S.heun(gmm, z * fine[0], fine)
    start = L.karras(6, 0.002, 80.0)
    levels = fit_ladder(lambda sig: S.euler(gmm, z * sig[0], sig), reference, start, max_evals=250, seed=3)
    assert len(levels) == 6 and all(a > b > 0 for a, b in zip(levels, levels[1:]))
    # judged on noise and projections the fit never saw, against fresh samples of the target
    fitted = torch.tensor(levels + [0.0])
    z2 = torch.randn(50_000, 2, generator=torch.Generator().manual_seed(2))
    truth = gmm.sample(50_000, generator=torch.Generator().manual_seed(4))
    proj = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    before = sliced_wasserstein(S.euler(gmm, z2 * start[0], start), truth, 64, generator=proj())
    after = sliced_wasserstein(S.euler(gmm, z2 * fitted[0], fitted), truth, 64, generator=proj())
    floor = sliced_wasserstein(gmm.sample(50_000, generator=torch.Generator().manual_seed(5)), truth, 64,
                               generator=proj())
    assert after < 0.7 * before, (before, after, floor)
    # the same seed gives the same ladder
    again = fit_ladder(lambda sig: S.euler(gmm, z * sig[0], sig), reference, start, max_evals=250, seed=3)
    assert again == levels


def test_fit_ladder_starts_from_the_best_candidate_and_never_returns_worse():
    sample, reference = _sampler_and_reference(S.dpmpp_2m, sigma_max=160.0)
    starts = candidate_ladders(5)
    dist = ladder_distance(reference, seed=0)
    best_start = min(dist(sample(v)) for v in starts.values())
    levels = fit_ladder(sample, reference, starts, max_evals=len(starts) + 40, seed=0)
    assert dist(sample(torch.tensor(levels + [0.0]))) <= best_start


def test_fit_ladder_bad_input():
    ref = torch.zeros(8, 2)
    with pytest.raises(PolydiffError, match="strictly decreasing"):
        fit_ladder(lambda s: ref, ref, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(PolydiffError, match="same number of steps"):
        fit_ladder(lambda s: ref, ref, [L.karras(3), L.karras(4)])
    with pytest.raises(PolydiffError, match="shape"):
        fit_ladder(lambda s: torch.zeros(4, 2), ref, L.karras(3))


@pytest.fixture
def toy_bundle(fresh_registry, fixture_plugins, tmp_path):
    import polydiff_toy

    rec = fresh_registry.register_plugin(polydiff_toy.plugin, name="toy", distribution="polydiff-toy", version="0.0.1")
    assert rec.status == "ok", rec.error
    return polydiff_toy.save_bundle(tmp_path / "toy.safetensors")


def test_ladder_command_writes_a_bundle_that_samples_on_the_fitted_levels(toy_bundle, tmp_path):
    from polydiff.checkpoint import load_bundle
    from polydiff.model import Model

    out = tmp_path / "fitted.safetensors"
    args = ["ladder", str(toy_bundle), "--steps", "4", "--samples", "64", "--evals", "30", "--reference-steps", "20",
            "--out", str(out), "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and summary["sampler"] == "euler" and len(summary["sigmas"]) == 4
    tensors, meta = load_bundle(out)
    src, _ = load_bundle(toy_bundle)
    assert tensors.keys() == src.keys() and all(torch.equal(v, src[k]) for k, v in tensors.items())
    sc = meta["config"]["sample"]
    assert sc["schedule"] == "fitted" and sc["steps"] == 4 and sc["schedule_args"]["sigmas"] == summary["sigmas"]
    model = Model.load(out)
    assert model.sigmas().tolist() == pytest.approx(summary["sigmas"] + [0.0], rel=1e-6)
    assert model.sigma_range() == (pytest.approx(min(summary["sigmas"])), pytest.approx(max(summary["sigmas"])))
    assert len(model.sigmas(9)) == 10  # other step counts stretch the fitted ladder
    # the same seed fits the same ladder
    again = CliRunner().invoke(cli, args[:-3] + ["--out", str(tmp_path / "again.safetensors"), "--json"])
    assert json.loads(again.stdout)["sigmas"] == summary["sigmas"]
    sampled = CliRunner().invoke(cli, ["sample", "toy", "--model", str(out), "-n", "3", "--out",
                                       str(tmp_path / "s.csv"), "--json"])
    assert sampled.exit_code == 0, sampled.output
    assert json.loads(sampled.stdout)["schedule"] == "fitted"


def test_ladder_command_bad_input_is_one_line(toy_bundle, tmp_path):
    out = tmp_path / "x.safetensors"
    for args, words in [(["--steps", "1"], "--steps"), (["--samples", "1"], "--samples"),
                        (["--sampler", "nope"], "unknown sampler"), (["--evals", "0"], "--evals"),
                        (["--knots", "9"], "--knots"), (["--seed", "-1"], "--seed"),
                        (["--reference-steps", "1"], "--reference-steps")]:
        result = CliRunner().invoke(cli, ["ladder", str(toy_bundle), "--out", str(out)] + args)
        assert result.exit_code != 0 and words in result.stderr.strip().splitlines()[-1], result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    result = CliRunner().invoke(cli, ["export", str(toy_bundle), str(out), "--schedule", "fitted"])
    assert result.exit_code != 0 and "polydiff ladder" in result.stderr
    assert not out.exists()


def test_fit_ladder_with_fewer_knots_stretches_them():
    sample, reference = _sampler_and_reference(S.euler, sigma_max=80.0)
    start = L.karras(8, 0.002, 80.0)
    levels = fit_ladder(sample, reference, start, knots=3, max_evals=80, seed=0)
    assert len(levels) == 8 and all(a > b > 0 for a, b in zip(levels, levels[1:]))
    # eight levels on a log-linear stretch of three: constant log steps within each half
    logs = torch.tensor(levels, dtype=torch.float64).log()
    d = logs[1:] - logs[:-1]
    assert torch.allclose(d[:3], d[0].expand(3), rtol=1e-3) and torch.allclose(d[-3:], d[-1].expand(3), rtol=1e-3)
    dist = ladder_distance(reference)
    assert dist(sample(torch.tensor(levels + [0.0]))) < dist(sample(start))
    with pytest.raises(PolydiffError, match="knots"):
        fit_ladder(sample, reference, start, knots=9)


def test_ladder_distance_is_the_sliced_wasserstein_distance_with_the_same_directions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g) * 1.5
    f = ladder_distance(a, projections=32, seed=4)
    assert f(b) == pytest.approx(sliced_wasserstein(b, a, 32, generator=torch.Generator().manual_seed(4)), rel=1e-9)
