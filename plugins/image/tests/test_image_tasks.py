"""`polydiff inpaint|upscale|denoise image` (polydiff_image.tasks).

Two kinds of model: the tiny trained models (the plumbing: files, sizes, channels, exactness, errors, the
CLI) and the tiny model with its denoiser replaced by an *oracle* whose answer is known in closed form (a
constant image; the posterior mean of a Gaussian prior around a flat gray image), with which a correct
pipeline must give a predictable result: this checks alignment and units end to end."""
import json

import numpy as np
import pytest
import torch

from polydiff.errors import InputError, PolydiffError

from polydiff_image import datasets
from polydiff_image import io as image_io
from polydiff_image.encoder import from_tensor, to_tensor
from polydiff_image.tasks import (SIGMA_FLOOR, block_mean, block_replicate, consistent, denoise, denoise_arrays,
                                  estimate_noise, inpaint, inpaint_arrays, load_model, read_mask, upscale,
                                  upscale_arrays)


def digits(n=3):
    """n bundled held-out digits (different classes), uint8 [n, 28, 28, 1]."""
    s = datasets.mnist_sample()
    return np.stack([s.arrays[s.labels.index(d)] for d in (2, 5, 8, 0, 3, 6)[:n]])


def centre_hole(size=28, a=8, b=20):
    hole = np.zeros((size, size), bool)
    hole[a:b, a:b] = True
    return hole


def downscale(imgs, factor):
    """The exact block average, rounded: what upscaling must give back."""
    return from_tensor(block_mean(to_tensor(imgs), factor))


#: the block means of a consistent float image, rounded pixel by pixel to levels, move by at most half a level
HALF_LEVEL = 0.51


def consistency(big, low, factor):
    """Largest |block mean of ``big`` - ``low``| in pixel levels (floats: no second rounding)."""
    bm = block_mean(torch.from_numpy(big.astype(np.float64)).movedim(-1, -3), factor).movedim(-3, -1).numpy()
    return float(np.abs(bm - low).max())


# --------------------------------------------------------------------------------------- inpainting
def test_inpaint_keeps_known_pixels_exactly_gray(tiny_model):
    x, hole = digits(3), centre_hole()
    out = inpaint_arrays(tiny_model, x, hole, seed=1)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, ~hole], x[:, ~hole])
    assert (out[:, hole] != x[:, hole]).mean() > 0.5  # the hole was redrawn
    again = inpaint_arrays(tiny_model, x, hole, seed=1)
    other = inpaint_arrays(tiny_model, x, hole, seed=2, resample_passes=2)
    assert np.array_equal(again, out) and not np.array_equal(other, out)
    assert np.array_equal(other[:, ~hole], x[:, ~hole])


def test_inpaint_keeps_known_pixels_exactly_rgb(tiny_rgb_model, helpers):
    x = helpers.random_rgb(2, seed=9)
    holes = np.zeros((2, 16, 16), bool)  # one hole per image
    holes[0, 2:9, 3:12] = True
    holes[1, :, 10:] = True
    out = inpaint_arrays(tiny_rgb_model, x, holes, label="1", seed=0)
    assert out.shape == (2, 16, 16, 3)
    for i in range(2):
        assert np.array_equal(out[i][~holes[i]], x[i][~holes[i]])
        assert (out[i][holes[i]] != x[i][holes[i]]).any(axis=-1).mean() > 0.5


def test_gray_file_to_the_rgb_model(tiny_rgb_model, tmp_path, helpers):
    gray = helpers.random_rgb(1, seed=6)[0, :, :, :1]
    src = helpers.save(tmp_path / "gray.png", gray)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    s = inpaint(tiny_rgb_model, src, helpers.save(tmp_path / "m.png", mask), tmp_path / "o.png", steps=2)
    y, hole = image_io.read_image(tmp_path / "o.png"), mask > 127
    assert s["channels"] == 3 and y.shape == (16, 16, 3)
    assert np.array_equal(y[~hole], np.repeat(gray, 3, axis=2)[~hole])  # the gray pixels, in all three channels


def test_inpaint_files(tiny_model, tmp_path, helpers):
    x = digits(1)[0]
    src = helpers.save(tmp_path / "digit.png", x)
    mask = np.zeros((28, 28, 3), np.uint8)
    mask[4:10, 5:25, 2] = 200  # a colour mask: the brightest channel counts
    mask[4:10, 5:25, 0] = 90
    m = helpers.save(tmp_path / "mask.png", mask)
    out, traj = tmp_path / "filled.png", tmp_path / "traj.png"
    s = inpaint(tiny_model, src, m, out, steps=2, seed=3, trajectory=traj)
    y = image_io.read_image(out)
    hole = mask.max(axis=2) > 127
    assert y.shape == (28, 28, 1) and np.array_equal(y[~hole], x[~hole]) and not np.array_equal(y[hole], x[hole])
    assert s["generated_pixels"] == 6 * 20 and s["size"] == [28, 28] and s["channels"] == 1 and s["steps"] == 2
    assert s["out"] == str(out) and s["label"] == "none" and s["trajectory"] == str(traj)
    assert image_io.read_image(traj).shape == (56 + 4, 3 * 56 + 8, 1)  # one row: 2 steps and the result
    json.dumps(s)


def test_read_mask(tmp_path, helpers):
    m = np.zeros((6, 5), np.uint8)
    m[1, 2], m[4, 4] = 128, 127
    p = helpers.save(tmp_path / "m.png", m)
    assert read_mask(p, (6, 5)).tolist() == (m > 127).tolist()
    with pytest.raises(InputError, match=r"m\.png: the mask is 5x6 pixels but the image is 6x6; they must match"):
        read_mask(p, (6, 6))


# --------------------------------------------------------------------------------------- super-resolution
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("method", ["project", "sdedit"])
def test_upscale_size_and_consistency(tiny_model, factor, method):
    x = digits(4)
    low = downscale(x, factor)
    assert low.shape == (4, 28 // factor, 28 // factor, 1)
    big = upscale_arrays(tiny_model, low, factor, method=method, seed=2)
    assert big.shape == (4, 28, 28, 1) and big.dtype == np.uint8
    # every pixel is rounded to a level: the block means move by at most half a level
    assert consistency(big, low, factor) <= HALF_LEVEL
    assert np.abs(downscale(big, factor).astype(int) - low).max() <= 1  # rounded again: one level
    assert not np.array_equal(big, np.repeat(np.repeat(low, factor, 1), factor, 2))  # not a plain enlargement
    assert np.array_equal(upscale_arrays(tiny_model, low, factor, method=method, seed=2), big)


@pytest.mark.parametrize("factor", [2, 4])
def test_conditioned_upscale_size_and_consistency(tiny_sr_model, factor):
    """A super-resolution model upscales with method conditioned by default, from noise, seeded."""
    low = downscale(digits(3), factor)
    big = upscale_arrays(tiny_sr_model, low, factor, seed=1)
    assert big.shape == (3, 28, 28, 1) and big.dtype == np.uint8
    assert consistency(big, low, factor) <= HALF_LEVEL
    assert np.array_equal(upscale_arrays(tiny_sr_model, low, factor, method="conditioned", seed=1), big)
    assert not np.array_equal(upscale_arrays(tiny_sr_model, low, factor, seed=2), big)
    for method in ("project", "sdedit"):  # the other methods run on it too, given the same low-resolution image
        assert consistency(upscale_arrays(tiny_sr_model, low, factor, method=method, seed=1), low, factor) <= HALF_LEVEL


def test_conditioned_upscale_gives_the_network_the_low_resolution_image(tiny_sr_model):
    """The network's lowres input is the input replicated into blocks, in model units, at every step."""
    seen = []
    D = tiny_sr_model.denoiser

    def spy(x, sigma, **cond):
        seen.append(cond["lowres"].clone())
        return D(x, sigma, **cond)

    tiny_sr_model.denoiser = spy
    low = downscale(digits(2), 4)
    upscale_arrays(tiny_sr_model, low, 4, steps=3)
    want = block_replicate(to_tensor(low), 4)
    assert len(seen) >= 3 and all(torch.equal(s, want) for s in seen)


def test_upscale_methods_and_models_are_checked(tiny_model, tiny_sr_model):
    low = downscale(digits(1), 4)
    with pytest.raises(PolydiffError, match="--method conditioned needs a super-resolution model"):
        upscale_arrays(tiny_model, low, 4, method="conditioned")
    with pytest.raises(PolydiffError, match="--factor 7: this super-resolution model was trained for x2 and x4"):
        upscale_arrays(tiny_sr_model, downscale(digits(1), 7), 7)
    with pytest.raises(PolydiffError, match="this is a super-resolution network: it needs the low-resolution image"):
        tiny_sr_model.generate(2, steps=2)


def test_upscale_uses_the_bundled_super_resolution_model_by_default(tiny_sr_model_path, tmp_path, helpers,
                                                                    monkeypatch):
    from polydiff.plugins import registry

    from polydiff_image.tasks import DEFAULT_UPSCALE_MODEL

    pretrained = registry().modality("image").pretrained
    monkeypatch.setitem(pretrained, DEFAULT_UPSCALE_MODEL, tiny_sr_model_path)
    src = helpers.save(tmp_path / "small.png", downscale(digits(1), 2)[0])
    s = upscale(None, src, tmp_path / "big.png", 2, steps=2)
    assert s["model"] == str(tiny_sr_model_path) and s["method"] == "conditioned"
    monkeypatch.delitem(pretrained, DEFAULT_UPSCALE_MODEL)
    monkeypatch.setitem(pretrained, "mnist", tiny_sr_model_path)  # without it: the modality's default model
    assert upscale(None, src, tmp_path / "big2.png", 2, steps=2)["model"] == str(tiny_sr_model_path)


@pytest.mark.parametrize("shape,factor,want", [((7, 7, 1), 4, "mnist_sr"), ((14, 14, 1), 2, "mnist_sr"),
                                                ((16, 16, 3), 2, "cifar10"), ((8, 8, 3), 4, "cifar10"),
                                                ((16, 16, 1), 2, "cifar10")])  # gray fits the RGB model
def test_upscale_picks_the_bundled_model_that_fits_the_input(shape, factor, want):
    from polydiff.plugins import registry

    from polydiff_image.tasks import pick_upscale_model

    if not {"mnist_sr", "cifar10"} <= set(registry().modality("image").pretrained):
        pytest.skip("needs the bundled mnist_sr and cifar10 checkpoints")
    assert pick_upscale_model(np.zeros(shape, np.uint8), factor) == want
    rgb = np.zeros((7, 7, 3), np.uint8)
    rgb[..., 0] = 255
    with pytest.raises(InputError, match=r"a 7x7 colour image at --factor 4: no bundled image model fits \(.*"
                                         r"mnist_sr: 14x14 \(x2\) or 7x7 \(x4\) gray.*give --model"):
        pick_upscale_model(rgb, 4)


def test_upscale_rgb(tiny_rgb_model, helpers):
    x = helpers.random_rgb(2, seed=4)
    for factor in (2, 4):
        low = downscale(x, factor)
        for method in ("project", "sdedit"):
            big = upscale_arrays(tiny_rgb_model, low, factor, method=method, seed=0, strength=0.3)
            assert big.shape == (2, 16, 16, 3) and consistency(big, low, factor) <= HALF_LEVEL


def test_upscale_with_a_flat_oracle_is_the_block_enlargement(tiny_rgb_model, helpers):
    """A denoiser that always answers a flat image: the projection replaces every block by its wanted mean,
    so the result is exactly the low-resolution image enlarged (checks the block layout, per channel)."""
    tiny_rgb_model.denoiser = lambda x, sigma, **cond: torch.zeros_like(x)
    low = downscale(helpers.random_rgb(2, seed=5), 4)
    big = upscale_arrays(tiny_rgb_model, low, 4, steps=3)
    assert np.array_equal(big, np.repeat(np.repeat(low, 4, 1), 4, 2))


def test_consistent_is_the_nearest_consistent_image():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    y[0, 0, 0, 0], y[0, 0, 0, 1], y[0, 0, 0, 2] = 1.0, -1.0, -1 + 1 / 127.5  # saturated and nearly saturated blocks
    x = torch.randn(2, 3, 16, 16, generator=g) * 3  # far outside [-1, 1]
    z = consistent(x, y, 4)
    assert z.min() >= -1 and z.max() <= 1
    assert (block_mean(z, 4) - y).abs().max() < 1e-5
    # the nearest point of a convex set: (x - z) . (w - z) <= 0 for every w in the set, block by block
    # (the alternating projections used before left points 0.1-0.4 off this)
    for k in range(3):
        w = consistent(torch.randn(2, 3, 16, 16, generator=g) * (k + 1), y, 4)
        assert block_mean((x - z) * (w - z), 4).max() < 1e-4
    # an image that is consistent and in range already is left as it is
    p = torch.randn(2, 3, 16, 16, generator=g)
    p = p - block_replicate(block_mean(p, 4), 4)  # zero mean in every block
    inside = block_replicate(y * 0.9, 4) + 0.05 * p / p.abs().max()
    assert torch.allclose(consistent(inside, y * 0.9, 4), inside, atol=1e-5)


def test_upscale_files_and_options(tiny_model, tmp_path, helpers):
    x = digits(1)
    low = downscale(x, 4)[0]
    src = helpers.save(tmp_path / "small.png", low)
    s = upscale(tiny_model, src, tmp_path / "big.png", 4, method="sdedit", steps=2, seed=1)
    big = image_io.read_image(tmp_path / "big.png")
    assert big.shape == (28, 28, 1) and s["size_in"] == [7, 7] and s["size_out"] == [28, 28]
    assert s["consistency_max"] <= 1 and s["consistency_mean"] < 0.5 and s["method"] == "sdedit"
    assert consistency(big[None], low[None], 4) <= HALF_LEVEL
    for kw, needle in [({"factor": 1}, "--factor must be 2 or more"),
                       ({"factor": 3}, "--factor 3 does not divide the model's image size 28"),
                       ({"method": "bicubic"}, "--method must be one of conditioned, project, sdedit"),
                       ({"strength": 0.0}, r"--strength must be in \(0, 1\]"),
                       ({"steps": 0}, "--steps must be at least 1")]:
        with pytest.raises(PolydiffError, match=needle):
            upscale(tiny_model, src, tmp_path / "x.png", **{"factor": 4, **kw})
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------------------- denoising
def noisy_flat(sigma, shape=(96, 96), level=128, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(level + rng.normal(0, sigma, shape)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [3.0, 10.0, 25.0])
def test_estimate_noise_recovers_sigma(sigma):
    est = estimate_noise(noisy_flat(sigma))
    exact = np.sqrt(sigma ** 2 + 1 / 12)  # the rounding to levels adds its own noise
    assert abs(est / exact - 1) < 0.1, est
    rgb = np.stack([noisy_flat(sigma, seed=k) for k in range(3)], axis=-1)
    assert abs(estimate_noise(rgb) / exact - 1) < 0.1


def test_estimate_noise_ignores_clean_images():
    assert estimate_noise(np.full((40, 40), 128, np.uint8)) == 0.0
    ramp = np.add.outer(np.arange(40), 2 * np.arange(40)).astype(np.float64)  # a linear ramp cancels too
    assert estimate_noise(ramp) == 0.0
    assert estimate_noise(digits(1)[0]) < 2.0  # a clean digit: its edges barely count
    assert estimate_noise(np.zeros((2, 9))) == 0.0


def gaussian_oracle(level=128, spread=4.0):
    """The posterior mean for images drawn as ``level`` plus white noise of ``spread`` levels (model units)."""
    mu, v = level / 127.5 - 1, (spread / 127.5) ** 2

    def D(x, sigma, **cond):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return mu + v / (v + s ** 2) * (x - mu)
    return D


def test_denoise_at_the_matched_level_with_an_oracle(tiny_model, tmp_path, helpers):
    """The probability-flow ODE of a Gaussian prior shrinks noise of sigma levels by sqrt(v / (v + sigma^2))
    when it starts at sigma: 20 levels of noise become 20 * 4 / sqrt(16 + 400) = 3.9 levels. A level in the
    wrong units (/ 255, or not divided at all) gives 7.4 or 0."""
    imgs = np.stack([noisy_flat(20.0, (28, 28), seed=k)[:, :, None] for k in range(4)])
    tiny_model.denoiser = gaussian_oracle()
    out = denoise_arrays(tiny_model, imgs, 20.0, steps=12)
    want = np.sqrt((20 * 4 / np.sqrt(16 + 400)) ** 2 + 1 / 12)
    assert abs(out.astype(np.float64).std() / want - 1) < 0.12, out.std()
    assert abs(out.astype(np.float64).mean() - 128) < 0.5
    # through the file: the level estimated from the image itself
    src = helpers.save(tmp_path / "noisy.png", imgs[0])
    s = denoise(tiny_model, src, tmp_path / "clean.png", steps=12)
    clean = image_io.read_image(tmp_path / "clean.png")
    assert s["sigma_source"] == "estimated" and abs(s["noise_sigma"] / 20 - 1) < 0.15
    assert clean.shape == (28, 28, 1) and clean.astype(np.float64).std() < 0.3 * imgs[0].std()


def test_denoise_with_the_tiny_model(tiny_model, tmp_path, helpers):
    x = digits(2)
    rng = np.random.default_rng(1)
    noisy = np.clip(x + rng.normal(0, 15, x.shape), 0, 255).astype(np.uint8)
    out = denoise_arrays(tiny_model, noisy, 15.0, seed=5)
    assert out.shape == x.shape and out.dtype == np.uint8 and not np.array_equal(out, noisy)
    # below the floor the image is topped up with fresh noise: the seed fixes it
    low = denoise_arrays(tiny_model, noisy, 1.0, seed=5)
    assert np.array_equal(denoise_arrays(tiny_model, noisy, 1.0, seed=5), low)
    assert not np.array_equal(denoise_arrays(tiny_model, noisy, 1.0, seed=6), low)
    src = helpers.save(tmp_path / "n.png", noisy[0])
    s = denoise(tiny_model, src, tmp_path / "c.png", sigma="7.5", steps=2)
    assert s["sigma_source"] == "given" and s["noise_sigma"] == 7.5 and s["sigma_start"] == 7.5 and s["steps"] == 2
    assert image_io.read_image(tmp_path / "c.png").shape == (28, 28, 1)
    s = denoise(tiny_model, src, tmp_path / "c.png", sigma=0, steps=2)
    assert s["sigma_start"] == SIGMA_FLOOR
    for bad in ["-1", "loud", "nan", "inf"]:
        with pytest.raises(PolydiffError, match="--sigma must be 'auto' or a number of pixel levels >= 0"):
            denoise(tiny_model, src, tmp_path / "c.png", sigma=bad)


def test_denoise_of_a_clean_flat_image_stays_flat(tiny_model, tmp_path, helpers):
    tiny_model.denoiser = gaussian_oracle(level=90, spread=1.0)
    src = helpers.save(tmp_path / "flat.png", np.full((28, 28), 90, np.uint8))
    s = denoise(tiny_model, src, tmp_path / "out.png", steps=6)
    assert s["noise_sigma"] == 0.0 and s["sigma_start"] == SIGMA_FLOOR
    out = image_io.read_image(tmp_path / "out.png").astype(np.float64)
    # the floor's top-up noise (2 levels) is taken out again, down to the prior's own spread (1 level)
    assert abs(out.mean() - 90) < 0.3 and out.std() < 1.3, (out.mean(), out.std())


# --------------------------------------------------------------------------------------- model loading
def test_load_model(tiny_model, tiny_model_path, monkeypatch):
    from polydiff.plugins import registry

    assert load_model(tiny_model) is tiny_model
    assert load_model(tiny_model_path).encoder.image_size == 28
    monkeypatch.setattr(registry().modality("image"), "pretrained", {})
    with pytest.raises(PolydiffError, match="no pretrained image model is bundled; give --model PATH"):
        load_model(None)


def test_a_model_of_another_modality_is_refused(tmp_path):
    from polydiff.plugins import registry

    if "points" not in registry().modalities or not registry().modality("points").pretrained:
        pytest.skip("no pretrained points model to try")
    with pytest.raises(PolydiffError, match="a 'points' model, not an? 'image' model"):
        load_model(next(iter(registry().modality("points").pretrained.values())))


# --------------------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def cli_runs(tiny_model_path, tiny_sr_model_path, tmp_path_factory, helpers):
    """Every command line below, run through the real entry point in one subprocess (start-up paid once):
    the bad inputs, which must each be one line on stderr, and three good runs."""
    d = tmp_path_factory.mktemp("cli")
    x = digits(1)[0]
    helpers.save(d / "digit.png", x)
    (d / "corrupt.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    helpers.save(d / "mask14.png", np.full((14, 14), 255, np.uint8))
    helpers.save(d / "colour.png", np.stack([x[:, :, 0], 255 - x[:, :, 0], x[:, :, 0]], axis=-1))
    helpers.save(d / "big.png", np.zeros((32, 32), np.uint8))
    helpers.save(d / "mask32.png", np.full((32, 32), 255, np.uint8))
    helpers.save(d / "small14.png", downscale(x[None], 2)[0])
    helpers.save(d / "small7.png", downscale(x[None], 4)[0])
    helpers.save(d / "black.png", np.zeros((28, 28), np.uint8))
    helpers.save(d / "hole.png", centre_hole().astype(np.uint8) * 255)
    helpers.save(d / "noisy.png", noisy_flat(12.0, (28, 28)))
    def line(args):  # the tiny gray model unless the command names its model
        args = [a.format(d=d, sr=tiny_sr_model_path) for a in args]
        return args if "--model" in args else args + ["--model", tiny_model_path]

    commands = {name: line(args) for name, (args, _) in BAD.items()}
    commands.update({name: line(args) for name, args in GOOD.items()})
    results = helpers.run_cli_many(list(commands.values()))
    return d, dict(zip(commands, results))


BAD = {
    "corrupt file": (["denoise", "image", "{d}/corrupt.png", "--out", "{d}/o.png"],
                     "{d}/corrupt.png: not a readable image"),
    "missing file": (["upscale", "image", "{d}/missing.png", "--factor", "4", "--out", "{d}/o.png"],
                     "{d}/missing.png: no such file"),
    "mask size": (["inpaint", "image", "{d}/digit.png", "--mask", "{d}/mask14.png", "--out", "{d}/o.png"],
                  "{d}/mask14.png: the mask is 14x14 pixels but the image is 28x28; they must match"),
    "colour to gray": (["denoise", "image", "{d}/colour.png", "--out", "{d}/o.png"],
                       "{d}/colour.png: a colour (RGB) image, but the model takes grayscale (1-channel) images"),
    "image size": (["inpaint", "image", "{d}/big.png", "--mask", "{d}/mask32.png", "--out", "{d}/o.png"],
                   "{d}/big.png: is 32x32 pixels; the model works on 28x28 images"),
    "upscale size": (["upscale", "image", "{d}/small14.png", "--factor", "4", "--out", "{d}/o.png"],
                     "{d}/small14.png: is 14x14 pixels; --factor 4 with the model's 28x28 images needs a 7x7 input"),
    "sample label": (["sample", "image", "--label", "11", "-n", "2", "--out", "{d}/o"],
                     "label '11' is not one of this model's classes (0, 1, 2,"),
    "task label": (["inpaint", "image", "{d}/digit.png", "--mask", "{d}/hole.png", "--label", "11", "--out", "{d}/o.png"],
                   "label '11' is not one of this model's classes"),
    "task out suffix": (["denoise", "image", "{d}/digit.png", "--out", "{d}/o.jpg"],
                        "{d}/o.jpg: the output is written as PNG; give a .png file name"),
    "sample out suffix": (["sample", "image", "-n", "2", "--out", "{d}/o.jpg"],
                          "{d}/o.jpg: images are written as PNG; use a .png name or a folder"),
    "negative sigma": (["denoise", "image", "{d}/digit.png", "--out", "{d}/o.png", "--sigma", "-3"],
                       "--sigma must be 'auto' or a number of pixel levels >= 0, got '-3'"),
    "sample a super-resolution model": (["sample", "image", "-n", "2", "--out", "{d}/o", "--model", "{sr}"],
                                        "this is a super-resolution network: it needs the low-resolution image "
                                        "(use `polydiff upscale image`, not `polydiff sample image`)"),
    "conditioned without a super-resolution model": (
        ["upscale", "image", "{d}/small7.png", "--factor", "4", "--method", "conditioned", "--out", "{d}/o.png"],
        "--method conditioned needs a super-resolution model (such as mnist_sr)"),
    "empty mask": (["inpaint", "image", "{d}/digit.png", "--mask", "{d}/black.png", "--out", "{d}/o.png"],
                   "{d}/black.png: the mask marks no pixel to generate"),
}

GOOD = {
    "inpaint": ["inpaint", "image", "{d}/digit.png", "--mask", "{d}/hole.png", "--out", "{d}/filled.png",
                "--steps", "2", "--resample", "2", "--label", "2", "--cfg-scale", "2", "--json"],
    "upscale": ["upscale", "image", "{d}/small7.png", "--factor", "4", "--out", "{d}/big.png", "--json"],
    "upscale sr": ["upscale", "image", "{d}/small14.png", "--factor", "2", "--out", "{d}/big_sr.png", "--json",
                   "--model", "{sr}"],
    "denoise": ["denoise", "image", "{d}/noisy.png", "--out", "{d}/clean.png", "--trajectory", "{d}/traj.png"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_input_is_one_line(cli_runs, case):
    d, runs = cli_runs
    r = runs[case]
    lines = r["stderr"].strip().splitlines()
    assert r["code"] == 1 and len(lines) == 1, r
    assert lines[0].startswith("Error: ") and BAD[case][1].format(d=d) in lines[0], lines[0]
    assert r["stdout"] == ""
    assert not (d / "o.png").exists() and not (d / "o.jpg").exists() and not (d / "o").exists()


def test_cli_inpaint(cli_runs):
    d, runs = cli_runs
    r = runs["inpaint"]
    assert r["code"] == 0 and r["stderr"] == "", r
    s = json.loads(r["stdout"])
    assert s["task"] == "inpaint" and s["generated_pixels"] == 144 and s["resample"] == 2 and s["label"] == "2"
    x, y, hole = image_io.read_image(d / "digit.png"), image_io.read_image(d / "filled.png"), centre_hole()
    assert np.array_equal(y[~hole], x[~hole]) and not np.array_equal(y[hole], x[hole])


def test_cli_upscale(cli_runs):
    d, runs = cli_runs
    r = runs["upscale"]
    assert r["code"] == 0 and r["stderr"] == "", r
    s = json.loads(r["stdout"])
    assert s["size_in"] == [7, 7] and s["size_out"] == [28, 28] and s["method"] == "sdedit" and s["steps"] == 3
    assert s["consistency_max"] <= 1
    big, low = image_io.read_image(d / "big.png"), image_io.read_image(d / "small7.png")
    assert big.shape == (28, 28, 1) and consistency(big[None], low[None], 4) <= HALF_LEVEL


def test_cli_upscale_with_a_super_resolution_model(cli_runs):
    d, runs = cli_runs
    r = runs["upscale sr"]
    assert r["code"] == 0 and r["stderr"] == "", r
    s = json.loads(r["stdout"])
    assert s["method"] == "conditioned" and s["size_in"] == [14, 14] and s["consistency_max"] <= 1
    big, low = image_io.read_image(d / "big_sr.png"), image_io.read_image(d / "small14.png")
    assert big.shape == (28, 28, 1) and consistency(big[None], low[None], 2) <= HALF_LEVEL


def test_cli_denoise(cli_runs):
    d, runs = cli_runs
    r = runs["denoise"]
    assert r["code"] == 0 and r["stderr"] == "", r
    line = r["stdout"].strip()
    assert line.startswith("noise level ") and "(estimated), denoised in 3 steps; wrote " in line
    assert f"wrote {d / 'clean.png'} [model " in line and len(line.splitlines()) == 1  # names the model it used
    level = float(line.split()[2])
    assert abs(level / 12 - 1) < 0.15
    assert image_io.read_image(d / "clean.png").shape == (28, 28, 1)
    assert image_io.read_image(d / "traj.png").shape == (56 + 4, 4 * 56 + 10, 1)
