"""polydiff.sampling.run: the one sampling run every path goes through."""
import ast
import math
from pathlib import Path

import pytest
import torch

from polydiff import get_sampler
from polydiff.errors import PolydiffError
from polydiff.model import Model
from polydiff.sampling import Known, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes():
    return Model.load("shapes", device="cpu")


def _by_hand(model, n, seed, steps, start=None, sigma_start=None, start_noise=0.0):
    """The run written out: generator, starting noise, the model's sampler with the CPU generator."""
    g = torch.Generator().manual_seed(seed)
    cond = model.cond(n, generator=g) if start is None else model.cond(n)
    if start is None:
        sigmas = model.sigmas(steps)
        x = torch.randn((n,) + tuple(model.encoder.sample_shape()), generator=g) * sigmas[0]
    else:
        sigmas = model.sigmas_from(sigma_start, steps)
        x = start + math.sqrt(sigma_start ** 2 - start_noise ** 2) * torch.randn(start.shape, generator=g)
    sc = model.config["sample"]
    fn = get_sampler(sc["sampler"])
    return fn(model.guided_denoiser(), x, sigmas, cond=cond, generator=g, **sc.get("sampler_args", {}))


def test_run_from_noise_is_the_written_out_run_and_model_sample_is_run(shapes):
    want = _by_hand(shapes, 40, 3, 6)
    got, _ = run(shapes, n=40, seed=3, steps=6)
    assert torch.equal(got, want)
    assert torch.equal(shapes.sample(40, seed=3, steps=6)[0], want)


def test_run_from_a_partly_noised_start_tops_its_noise_up(shapes):
    start = torch.randn(30, 2, generator=torch.Generator().manual_seed(9)) * 0.3
    want = _by_hand(shapes, 30, 4, 5, start=start, sigma_start=0.8, start_noise=0.5)
    got, _ = run(shapes, start=start, sigma_start=0.8, start_noise=0.5, seed=4, steps=5, cond=shapes.cond(30))
    assert torch.equal(got, want)
    with pytest.raises(PolydiffError, match="must be in"):
        run(shapes, start=start, sigma_start=0.4, start_noise=0.5)
    with pytest.raises(PolydiffError, match="positive start noise level"):
        run(shapes, start=start)
    with pytest.raises(PolydiffError, match="at least 1"):
        run(shapes, n=0)


def test_known_values_are_kept_exactly_and_make_cond_keys_mean_the_same(shapes):
    n = 20
    values = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(n, 2)
    mask[:, 0] = 1.0
    x, cond = run(shapes, n=n, seed=2, steps=5, known=Known(values, mask))
    assert torch.equal(x[:, 0], values[:, 0]) and not torch.equal(x[:, 1], values[:, 1])
    assert "known" not in cond
    # a make_cond (or caller) that still puts the control into cond gets the same run through Model.sample
    c = shapes.cond(n, generator=torch.Generator().manual_seed(2))
    c.update(known=values, known_mask=mask, resample=1)
    assert torch.equal(shapes.sample(n, seed=2, steps=5, cond=c)[0], x)


def test_precision_and_wrap_reach_every_kind_of_run(shapes):
    seen = []

    def wrap(D):
        def wrapped(x, sigma, **cond):
            out = D(x, sigma, **cond)
            seen.append(out.dtype)
            return out
        return wrapped

    calls = []
    net = shapes.net
    hook = net.register_forward_hook(lambda m, i, o: calls.append(torch.is_autocast_enabled("cpu")))
    try:
        start = torch.zeros(4, 2)
        known = Known(torch.zeros(4, 2), torch.ones(4, 2))
        for kw in ({"n": 4}, {"start": start, "sigma_start": 0.5}, {"n": 4, "known": known}):
            calls.clear()
            seen.clear()
            run(shapes, steps=3, seed=0, precision="bf16", wrap=wrap, cond=shapes.cond(4), **kw)
            assert calls and all(calls), kw  # the network ran under bfloat16 autocast
            assert seen and all(d == torch.float32 for d in seen), kw  # the task's operator sees float32
    finally:
        hook.remove()


def test_the_same_seed_gives_the_same_bytes_through_each_front(shapes):
    a = run(shapes, n=16, seed=11, steps=4, sampler="ddpm")[0]
    b = run(shapes, n=16, generator=torch.Generator().manual_seed(11), steps=4, sampler="ddpm")[0]
    c = shapes.sample(16, seed=11, steps=4, sampler="ddpm")[0]
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, run(shapes, n=16, seed=12, steps=4, sampler="ddpm")[0])


def _calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            yield f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def test_no_plugin_or_benchmark_runs_a_sampler_by_hand():
    """Samplers, masked sampling and guided denoisers are called by the sampling run only: plugins and the
    benchmarks of models go through polydiff.sampling.run or Model.sample (benchmarks/samplers.py measures
    the samplers themselves and is exempt)."""
    offenders = []
    files = list((ROOT / "plugins").glob("*/polydiff_*/**/*.py")) + list((ROOT / "benchmarks").glob("*.py"))
    for path in files:
        if path.name == "samplers.py" and path.parent.name == "benchmarks":
            continue
        names = set(_calls(path))
        bad = names & {"sample_masked", "guided_denoiser", "cfg_denoiser", "masked_denoiser"}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
        text = path.read_text()
        if "get_sampler(" in text and ")(" in text.split("get_sampler(", 1)[1].split("\n", 1)[0]:
            offenders.append(f"{path.relative_to(ROOT)}: calls a sampler it looked up")
        for fn in ("= get_sampler(",):
            if fn in text:
                offenders.append(f"{path.relative_to(ROOT)}: keeps a sampler function ({fn.strip()})")
    assert not offenders, offenders
