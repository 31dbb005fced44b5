"""Adapter algebra of polydiff.precond: eps / v / x0 / EDM networks turned into x0 denoisers."""
import math

import pytest
import torch
from torch import nn

from polydiff.precond import (EDM, PARAMETERISATIONS, EpsPrediction, VPrediction, X0Prediction, append_dims,
                              default_c_noise, make_denoiser)

SIGMAS = [0.002, 0.05, 0.5, 1.0, 3.0, 80.0]


class Oracle(nn.Module):
    """A 'network' that returns a fixed tensor and records what it was called with."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.calls = []

    def forward(self, x_in, c_noise, **cond):
        self.calls.append((x_in.clone(), c_noise.clone(), dict(cond)))
        return self.out


def _problem(seed=0, shape=(6, 3, 5), sigma_data=1.0, sigmas=None):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64) * sigma_data
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    sigma = torch.tensor(sigmas if sigmas is not None else SIGMAS, dtype=torch.float64)[: shape[0]]
    x = x0 + append_dims(sigma, x0.ndim) * eps
    return x0, eps, sigma, x


def _hand_target(name, x0, eps, sigma, sigma_data):
    """The regression target of each parameterisation, written out from its definition."""
    s = append_dims(sigma, x0.ndim)
    sd = sigma_data
    if name == "eps":
        return eps
    if name == "x0":
        return x0
    if name == "v":
        # VP view of the normalised data x0 / sigma_data at noise level sigma / sigma_data:
        # z = alpha * x0/sd + s_vp * eps with alpha^2 + s_vp^2 = 1; v = alpha * eps - s_vp * x0/sd
        alpha = sd / (s**2 + sd**2).sqrt()
        s_vp = s / (s**2 + sd**2).sqrt()
        return alpha * eps - s_vp * x0 / sd
    if name == "edm":
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        return (x0 - c_skip * (x0 + s * eps)) / c_out
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["eps", "v", "x0", "edm"])
@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_exact_network_gives_exact_x0(name, sigma_data):
    x0, eps, sigma, x = _problem(sigma_data=sigma_data)
    target = _hand_target(name, x0, eps, sigma, sigma_data)
    D = make_denoiser(Oracle(target), name, sigma_data=sigma_data)
    # the adapter's own training target agrees with the formula written out by hand
    torch.testing.assert_close(D.network_target(x0, eps, sigma), target, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(D(x, sigma), x0, rtol=1e-9, atol=1e-9)


def test_v_target_sigma_data_one_is_salimans_ho():
    # sigma_data = 1: alpha = 1/sqrt(1+sigma^2), s = sigma/sqrt(1+sigma^2), v = alpha*eps - s*x0
    x0, eps, sigma, x = _problem()
    s = append_dims(sigma, 3)
    alpha, s_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    v = alpha * eps - s_vp * x0
    D = VPrediction(Oracle(v))
    torch.testing.assert_close(D.network_target(x0, eps, sigma), v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(D(x, sigma), x0, rtol=1e-9, atol=1e-9)
    # and x0 = alpha * z - s * v on the VP-scaled input z
    z = x / (1 + s**2).sqrt()
    torch.testing.assert_close(alpha * z - s_vp * v, x0, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["eps", "v", "x0", "edm"])
@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_network_sees_vp_scaled_input_and_c_noise(name, sigma_data):
    x0, eps, sigma, x = _problem(sigma_data=sigma_data)
    net = Oracle(torch.zeros_like(x))
    make_denoiser(net, name, sigma_data=sigma_data)(x, sigma, label=torch.arange(6))
    (x_in, c_noise, cond), = net.calls
    expected_in = x / append_dims((sigma**2 + sigma_data**2).sqrt(), 3)
    torch.testing.assert_close(x_in, expected_in, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_noise, sigma.log() / 4, rtol=1e-12, atol=1e-12)
    assert torch.equal(cond["label"], torch.arange(6))


def test_vp_input_scaling_for_unit_sigma_data():
    # with sigma_data = 1 the network input is the VP state x_vp = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    x0, eps, sigma, x = _problem()
    net = Oracle(torch.zeros_like(x))
    EpsPrediction(net)(x, sigma)
    alpha_bar = append_dims(1 / (1 + sigma**2), 3)
    x_vp = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    torch.testing.assert_close(net.calls[0][0], x_vp, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(net.calls[0][0], x / append_dims((1 + sigma**2).sqrt(), 3), rtol=1e-12, atol=1e-12)


def test_custom_sigma_to_t_is_used():
    x0, eps, sigma, x = _problem()
    net = Oracle(torch.zeros_like(x))
    make_denoiser(net, "eps", sigma_to_t=lambda s: s * 10)(x, sigma)
    torch.testing.assert_close(net.calls[0][1], sigma * 10)


class Consistent(nn.Module):
    """A network of a given parameterisation built from one shared x0 estimator f(x, sigma)."""

    def __init__(self, name, sigma_data, f):
        super().__init__()
        self.name, self.sd, self.f = name, sigma_data, f

    def forward(self, x_in, c_noise, **cond):
        sigma = (4 * c_noise).exp()
        s = append_dims(sigma, x_in.ndim)
        x = x_in * (s**2 + self.sd**2).sqrt()  # undo c_in
        x0 = self.f(x, sigma)
        eps = (x - x0) / s
        return _hand_target(self.name, x0, eps, sigma, self.sd)


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_adapters_agree_for_consistent_networks(sigma_data):
    # a nonlinear x0 estimator, expressed as an eps-, v-, x0- and F-network: all adapters give the same x0_hat
    def f(x, sigma):
        return torch.tanh(x) * append_dims(1 / (1 + sigma), x.ndim) + 0.1 * x.mean(dim=-1, keepdim=True)

    _, _, sigma, x = _problem(seed=3, sigma_data=sigma_data)
    outs = {n: make_denoiser(Consistent(n, sigma_data, f), n, sigma_data=sigma_data)(x, sigma) for n in PARAMETERISATIONS}
    expected = f(x, sigma)
    for n, out in outs.items():
        torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-8, msg=f"adapter {n}")


def test_v_network_is_minus_edm_f():
    x0, eps, sigma, x = _problem(seed=4)
    v = VPrediction(Oracle(None)).network_target(x0, eps, sigma)
    F = EDM(Oracle(None)).network_target(x0, eps, sigma)
    torch.testing.assert_close(v, -F, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.002, 0.5, 1.0, 2.0, 80.0])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_scalings_match_karras_table_1(sigma, sigma_data):
    s = torch.tensor([sigma], dtype=torch.float64)
    c_skip, c_out, c_in = EDM(Oracle(None), sigma_data=sigma_data).scalings(s)
    sd = sigma_data
    assert c_skip.item() == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-12)
    assert c_out.item() == pytest.approx(sigma * sd / math.sqrt(sd**2 + sigma**2), rel=1e-12)
    assert c_in.item() == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert default_c_noise(s).item() == pytest.approx(math.log(sigma) / 4, rel=1e-12)


def test_edm_scalings_known_values():
    # sigma = sigma_data = 1: c_skip = 1/2, c_out = c_in = 1/sqrt(2); sigma = 0 (limit): c_skip = 1, c_out = 0
    c_skip, c_out, c_in = EDM(Oracle(None)).scalings(torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(c_out, torch.tensor([2**-0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(c_in, torch.tensor([2**-0.5, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("name", ["eps", "v", "x0", "edm"])
@pytest.mark.parametrize("scalar", [0.7, torch.tensor(0.7, dtype=torch.float64)])
def test_scalar_sigma_broadcasts(name, scalar):
    x0, eps, _, _ = _problem(seed=5, shape=(4, 2, 3))
    sigma = torch.full((4,), 0.7, dtype=torch.float64)
    x = x0 + 0.7 * eps
    D = make_denoiser(Oracle(None), name)
    D.net.out = D.network_target(x0, eps, sigma)
    out = D(x, scalar)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)
    assert D.net.calls[0][1].shape == (4,)


@pytest.mark.parametrize("name", ["eps", "v", "x0", "edm"])
def test_padding_mask_zeroes_padded_outputs(name):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 7, generator=g)
    mask = torch.ones(3, 1, 7)
    mask[0, :, 5:] = 0
    mask[2, :, 1:] = 0
    net = Oracle(torch.randn(3, 2, 7, generator=g) + 5.0)  # nonzero everywhere
    out = make_denoiser(net, name)(x, torch.full((3,), 2.0), mask=mask)
    padded = (mask == 0).expand_as(out)
    assert torch.equal(out[padded], torch.zeros(int(padded.sum())))
    assert (out[~padded] != 0).all()
    assert torch.equal(net.calls[0][2]["mask"], mask)  # the network still receives the mask
    unmasked = make_denoiser(net, name)(x, torch.full((3,), 2.0))
    torch.testing.assert_close(out[~padded], unmasked[~padded])


def test_make_denoiser_classes_and_unknown_name():
    net = Oracle(None)
    for name, cls in [("edm", EDM), ("eps", EpsPrediction), ("v", VPrediction), ("x0", X0Prediction)]:
        D = make_denoiser(net, name, sigma_data=0.5)
        assert type(D) is cls and D.sigma_data == 0.5 and D.net is net
    with pytest.raises(ValueError, match="unknown parameterisation 'epsilon'.*edm"):
        make_denoiser(net, "epsilon")
