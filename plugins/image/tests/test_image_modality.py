"""The image modality as a whole: conformance kit, the network, `polydiff train|sample image`, the demo."""
import json

import numpy as np
import pytest
import torch

from polydiff.errors import PolydiffError
from polydiff.plugins import registry
from polydiff.testing import check_modality, check_plugin

import polydiff_image
from polydiff_image import datasets
from polydiff_image import io as image_io
from polydiff_image.denoiser import UNet, augment, lowres_input
from polydiff_image.encoder import Images


def test_plugin_registers_the_modality_and_commands():
    import click

    reg = check_plugin(polydiff_image, name="image")
    mod = reg.modality("image")
    assert mod.guidance == {"label": -1} and {"mnist", "cifar10", "mnist_sample", "mnist_sr"} <= set(mod.recipes)
    assert mod.recipes["mnist_sr"]["config"]["network"]["lowres_factors"] == [2, 4] and mod.augment is not None
    assert {"mnist", "mnist_heldout", "cifar10", "cifar10_heldout", "mnist_sample"} <= set(mod.datasets)
    assert [o.name for o in mod.sample_options] == ["label"] and mod.draw is not None and mod.demo is not None
    root = click.Group("root")
    reg.add_commands(root)
    rec = reg.plugins["image"]
    assert rec.status == "ok" and rec.commands == ["denoise image", "inpaint image", "upscale image"], rec.error
    for verb in ("inpaint", "upscale", "denoise"):
        assert sorted(root.commands[verb].commands) == ["image"]


def test_mnist_is_the_default_pretrained_model(tmp_path, monkeypatch):
    """The commands' default model (the first pretrained one) is mnist, whatever else is bundled."""
    for name in ("cifar10", "aaa", "mnist"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    monkeypatch.setattr(polydiff_image, "PRETRAINED", tmp_path)
    pretrained = check_plugin(polydiff_image, name="image").modality("image").pretrained
    assert list(pretrained) == ["mnist", "aaa", "cifar10"]
    assert pretrained["mnist"] == tmp_path / "mnist.safetensors"


def test_commands_join_groups_other_plugins_made():
    import click

    from polydiff_image.tasks import add_commands

    root = click.Group("root")
    inpaint = click.Group("inpaint")
    inpaint.add_command(click.Command("audio"))
    root.add_command(inpaint)
    add_commands(root)
    assert root.commands["inpaint"] is inpaint and sorted(inpaint.commands) == ["audio", "image"]
    assert sorted(root.commands["upscale"].commands) == ["image"]


def test_conformance_gray_labelled(tmp_path, helpers):
    """The kit on 8 bundled digits. Written to a folder, the images come back with a grid.png among them
    (and without labels), so the kit's write/read check uses an .npz file, which keeps both."""
    sample = datasets.mnist_sample()
    items = Images(sample.arrays[:8], sample.labels[:8], sample.classes, sample.names[:8])
    model = check_modality(registry().modality("image"), items, tmp_path, config=helpers.TINY, write_suffix=".npz",
                           sample_options={"label": "3"})
    net = model.config["network"]
    assert (net["image_size"], net["image_channels"], net["num_classes"]) == (28, 1, 10)
    assert model.encoder.classes == datasets.MNIST_CLASSES


def test_conformance_rgb_unlabelled(tmp_path, helpers):
    items = Images(list(helpers.random_rgb(6, seed=3)))
    model = check_modality(registry().modality("image"), items, tmp_path, config=helpers.TINY, write_suffix=".npz")
    net = model.config["network"]
    assert (net["image_size"], net["image_channels"], net["num_classes"]) == (16, 3, 0)


@pytest.mark.parametrize("cfg", [
    {"image_size": 16, "image_channels": 1, "channels": [8, 16], "blocks": 1, "attention": [], "patch": 1},
    {"image_size": 16, "image_channels": 3, "channels": [8, 16], "blocks": 1, "attention": [8], "patch": 1},
    {"image_size": 28, "image_channels": 1, "channels": [8, 16], "blocks": 2, "attention": [7], "patch": 2},
    {"image_size": 32, "image_channels": 3, "channels": [8, 16, 16], "blocks": 1, "attention": [], "patch": 2},
])
def test_network_output_has_the_input_shape(cfg):
    torch.manual_seed(0)
    net = UNet.from_config({**cfg, "emb": 16, "num_classes": 3, "unknown_key": 1}).eval()
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised output layers would hide everything
            p.copy_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, cfg["image_channels"], cfg["image_size"], cfg["image_size"])
        a = net(x, torch.tensor([0.1, 0.2]), label=torch.tensor([0, 2]))
        b = net(x, torch.tensor([0.1, 0.2]), label=torch.tensor([1, 2]))
        c = net(x, torch.tensor([0.1, 0.2]), label=torch.tensor([-1, -1]))
        d = net(x, torch.tensor([0.1, 0.2]))  # no label: the extra "no label" row, as -1
        e = net(x, torch.tensor(0.1))  # one noise level for the batch
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert torch.equal(c, d) and not torch.allclose(c[1], b[1])
    assert e.shape == x.shape
    assert net.config_dict()["channels"] == cfg["channels"]
    wrong = torch.randn(1, cfg["image_channels"], cfg["image_size"] // 2, cfg["image_size"] // 2)
    with pytest.raises(PolydiffError, match=r"expected \[B, "):
        net(wrong, torch.tensor([0.1]))
    with pytest.raises(PolydiffError, match=r"expected \[B, "):
        net(torch.randn(1, 2, cfg["image_size"], cfg["image_size"]), torch.tensor([0.1]))


def test_unconditional_network_ignores_labels_and_bad_sizes_are_refused():
    net = UNet.from_config({"image_size": 8, "image_channels": 1, "channels": [8], "blocks": 1, "emb": 16})
    assert net.label_emb is None
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert net(x, torch.tensor([0.5]), label=torch.tensor([0])).shape == x.shape
    with pytest.raises(PolydiffError, match="image_size 28 must be patch .1. x a multiple of 8 for 4 levels"):
        UNet.from_config({"image_size": 28, "channels": [8, 8, 8, 8]})
    with pytest.raises(PolydiffError, match="image_size 15 must be patch .2."):
        UNet.from_config({"image_size": 15, "channels": [8], "patch": 2})


# --------------------------------------------------------------------------------------- super-resolution network
def test_conformance_super_resolution_network(tmp_path, helpers):
    """A network with lowres_factors through the kit: the low-resolution copy comes from the modality's
    augment, the class is dropped. Sampling without a low-resolution image is not what such a model does
    (test_image_tasks samples it through upscale_arrays), so the kit's sampling check is left out."""
    sample = datasets.mnist_sample()
    items = Images(sample.arrays[:8], sample.labels[:8], sample.classes, sample.names[:8])
    config = {**helpers.TINY, "network": {**helpers.TINY["network"], "lowres_factors": [2, 4]}}
    model = check_modality(registry().modality("image"), items, tmp_path, config=config, write_suffix=".npz",
                           skip=("sampling",))
    net = model.config["network"]
    assert net["lowres_factors"] == [2, 4] and net["num_classes"] == 0 and model.net.label_emb is None


def test_lowres_input_is_the_rounded_block_means_replicated():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g) * 2 - 1
    for f in (2, 4):
        low = lowres_input(x, f)
        means = torch.nn.functional.avg_pool2d(x, f)
        assert low.shape == x.shape
        assert torch.allclose(torch.nn.functional.avg_pool2d(low, f), means, atol=0.5 / 127.5 + 1e-6)
        levels = (low + 1) * 127.5
        assert torch.allclose(levels, levels.round(), atol=1e-4)  # whole pixel levels
        assert torch.equal(low, torch.nn.functional.interpolate(low[:, :, ::f, ::f], scale_factor=f))  # blocks


def test_augment_draws_a_factor_per_image_and_leaves_other_networks_alone():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    cond = {"label": torch.zeros(64, dtype=torch.long)}
    assert augment(x, cond, {"network": {}}, torch.Generator().manual_seed(1)) is cond
    out = augment(x, cond, {"network": {"lowres_factors": [2, 4]}}, torch.Generator().manual_seed(1))
    assert torch.equal(out["label"], cond["label"]) and out["lowres"].shape == x.shape
    is2 = [torch.equal(out["lowres"][i], lowres_input(x[i:i + 1], 2)[0]) for i in range(64)]
    is4 = [torch.equal(out["lowres"][i], lowres_input(x[i:i + 1], 4)[0]) for i in range(64)]
    assert all(a != b for a, b in zip(is2, is4)) and 16 < sum(is2) < 48  # each image one factor, both used
    again = augment(x, cond, {"network": {"lowres_factors": [2, 4]}}, torch.Generator().manual_seed(1))
    assert torch.equal(again["lowres"], out["lowres"])


def test_super_resolution_network_needs_its_low_resolution_image():
    net = UNet.from_config({"image_size": 8, "image_channels": 1, "channels": [8], "blocks": 1, "emb": 16,
                            "num_classes": 10, "lowres_factors": [2]})
    assert net.cfg.num_classes == 0 and net.inp.in_channels == 2
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(PolydiffError, match="this is a super-resolution network: it needs the low-resolution image"):
        net(x, torch.tensor([0.5, 0.5]))
    with pytest.raises(PolydiffError, match=r"lowres has shape \[2, 1, 4, 4\], expected \[2, 1, 8, 8\]"):
        net(x, torch.tensor([0.5, 0.5]), lowres=torch.zeros(2, 1, 4, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        a = net(x, torch.tensor([0.5, 0.5]), lowres=lowres_input(x, 2))
        b = net(x, torch.tensor([0.5, 0.5]), lowres=torch.zeros_like(x))
    assert a.shape == x.shape and not torch.allclose(a, b)  # the low-resolution image reaches the output
    with pytest.raises(PolydiffError, match="lowres_factors: 3 must be 2 or more and divide image_size 8"):
        UNet.from_config({"image_size": 8, "channels": [8], "lowres_factors": [3]})


def test_tiny_model_generates_digits_of_the_asked_class(tiny_model):
    assert tiny_model.encoder.metadata() == {"image_size": 28, "channels": 1, "resize": "crop",
                                             "classes": datasets.MNIST_CLASSES}
    imgs = tiny_model.generate(3, seed=0, label="7")
    assert isinstance(imgs, Images) and imgs.labels == [7, 7, 7]
    assert all(a.shape == (28, 28, 1) and a.dtype == np.uint8 for a in imgs.arrays)
    again = tiny_model.generate(3, seed=0, label="7")
    assert all(np.array_equal(a, b) for a, b in zip(imgs.arrays, again.arrays))
    assert tiny_model.generate(12, seed=0).labels == list(range(10)) + [0, 1]


# --------------------------------------------------------------------------------------- the commands
def test_cli_sample_writes_pngs_grid_and_trajectory(tiny_model_path, tmp_path, helpers):
    out, traj = tmp_path / "dir", tmp_path / "T.png"
    r = helpers.run_cli("sample", "image", "--model", tiny_model_path, "-n", "4", "--out", out, "--trajectory", traj,
                        "--label", "5", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n"] == 4 and summary["steps"] == 3 and summary["trajectory"] == str(traj)
    names = ["sample_000.png", "sample_001.png", "sample_002.png", "sample_003.png", "labels.csv", "grid.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert summary["files"] == [str(out / n) for n in names]
    assert (out / "labels.csv").read_text().splitlines() == ["file,label"] + [f"sample_{i:03d}.png,5" for i in range(4)]
    for n in names[:4]:
        a = image_io.read_image(out / n)
        assert a.shape == (28, 28, 1)
    # 4 images in 2 x 2, enlarged twice (64 // 28), 2-pixel borders
    assert image_io.read_image(out / "grid.png").shape == (2 * 56 + 6, 2 * 56 + 6, 1)
    # the trajectory: 4 rows, one column per step (3) and the final sample
    assert image_io.read_image(traj).shape == (4 * 56 + 10, 4 * 56 + 10, 1)


def test_cli_sample_to_npz(tiny_model_path, tmp_path, helpers):
    out = tmp_path / "s.npz"
    r = helpers.run_cli("sample", "image", "--model", tiny_model_path, "-n", "3", "--steps", "2", "--seed", "4",
                        "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote 3 of 3 image samples to ") and str(out) in r.stdout
    with np.load(out) as z:
        assert z["images"].shape == (3, 28, 28, 1) and z["images"].dtype == np.uint8
        assert z["labels"].tolist() == [0, 1, 2]


def test_cli_train_from_a_folder_with_class_sub_folders(tmp_path, helpers):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for cls in ("circles", "squares"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            helpers.save(data / cls / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    (data / "circles" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run = tmp_path / "run"
    r = helpers.run_cli("train", "image", "--data", data, "--steps", "2", "--batch-size", "4", "--out", run, "--json")
    assert r.returncode == 0, r.stderr
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 1 unreadable file(s), using 6 of 7" in warnings[0], r.stderr
    assert "broken.png" in warnings[0]
    summary = json.loads(r.stdout)
    assert summary["step"] == 2 and summary["model_path"] == str(run / "model.safetensors")
    from polydiff.model import Model

    m = Model.load(summary["model_path"], modality="image", device="cpu")
    assert m.encoder.classes == ["circles", "squares"] and m.config["network"]["num_classes"] == 2
    assert m.encoder.sample_shape() == (1, 8, 8) and m.config["train"]["steps"] == 2
    imgs = m.generate(2, seed=0, steps=2, label="squares")
    assert imgs.labels == [1, 1] and imgs.arrays[0].shape == (8, 8, 1)


@pytest.mark.skipif(not (polydiff_image.PRETRAINED / "mnist.safetensors").exists(),
                    reason="no pretrained mnist checkpoint bundled yet")
def test_demo(tmp_path):
    from polydiff_image.demo import run

    lines = []
    result = run(tmp_path, echo=lines.append, device="cpu", n=10)
    assert result["n"] == 10 and result["kept_exactly"] is True
    names = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert names == sorted([f"sample_{i:03d}.png" for i in range(10)] + ["grid.png", "labels.csv"])
    assert (tmp_path / "inpainting.png").exists() and all(__import__("os").path.exists(f) for f in result["files"])
    strip = image_io.read_image(tmp_path / "inpainting.png")
    assert strip.shape == (3 * 112 + 8, 3 * 112 + 8, 1)  # 3 x 3 digits enlarged 4 times
    if (polydiff_image.PRETRAINED / "mnist_sr.safetensors").exists():
        up = image_io.read_image(tmp_path / "upscaling.png")
        assert up.shape == (3 * 112 + 8, 3 * 112 + 8, 1) and str(tmp_path / "upscaling.png") in result["files"]
        assert any("super-resolution x4" in line for line in lines)
    assert any("pixels outside the hole kept exactly: True" in l for l in lines)
