"""The audio modality as a whole: conformance kit, the network, and `polydiff train|sample audio`."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.errors import PolydiffError
from polydiff.plugins import registry
from polydiff.testing import check_modality, check_plugin

import polydiff_audio
from polydiff_audio import datasets
from polydiff_audio.denoiser import FrameUNet
from polydiff_audio.encoder import Clips


def test_plugin_registers_the_modality_and_commands():
    import click

    reg = check_plugin(polydiff_audio, name="audio")
    mod = reg.modality("audio")
    assert mod.guidance == {"label": -1} and "fsdd_sample" in mod.recipes
    root = click.Group("root")
    reg.add_commands(root)
    rec = reg.plugins["audio"]
    assert rec.status == "ok" and rec.commands == ["denoise audio", "inpaint audio"], rec.error
    assert sorted(root.commands["inpaint"].commands) == sorted(root.commands["denoise"].commands) == ["audio"]


def test_commands_join_groups_other_plugins_made():
    import click

    from polydiff_audio.tasks import add_commands

    root = click.Group("root")
    inpaint = click.Group("inpaint")
    inpaint.add_command(click.Command("image"))
    root.add_command(inpaint)
    add_commands(root)
    assert root.commands["inpaint"] is inpaint and sorted(inpaint.commands) == ["audio", "image"]


def test_conformance(tmp_path, helpers):
    """The kit on the labelled FSDD sample. Its write/read check compares the labels too, and audio files
    carry none (``sample_000.wav``, ...), so that check is run below on the waveforms alone."""
    clips = datasets.fsdd_sample()
    model = check_modality(registry().modality("audio"), clips, tmp_path, config=helpers.TINY,
                           sample_options={"label": "3"}, skip=("write_read",))
    assert model.config["network"]["num_classes"] == 10 and model.config["network"]["clip_samples"] == 8000
    assert model.encoder.classes == [str(d) for d in range(10)]


def test_conformance_unlabelled_with_write_read(tmp_path, helpers):
    """Unlabelled clips of any length (shorter and longer than a clip), and the full kit: written WAV
    files read back to the same encodings, although some decoded clips peak above full scale."""
    rng = np.random.default_rng(0)
    waves = [w for w in datasets.fsdd_sample().waves[:6]]
    waves.append(np.concatenate([waves[0], waves[1], waves[2]]))  # longer than a clip: cropped
    waves.append((rng.standard_t(2, 3000) * 0.01).astype(np.float32))  # heavy tails: peaks far above 1 at RMS 0.1
    enc_peak = max(np.abs(w).max() / np.sqrt(np.mean(w.astype(np.float64) ** 2)) * 0.1 for w in waves)
    assert enc_peak > 1.0  # the case that used to be clipped when written
    clips = Clips(waves, 8000)
    # 16-bit files: a step of 2**-15 of full scale is up to ~1e-3 in model units (RMS 0.5) for a clip with
    # a crest factor near 40 like the heavy-tailed one, scaled down to peak at 0.99 when written
    model = check_modality(registry().modality("audio"), clips, tmp_path, config=helpers.TINY, write_suffix="",
                           decode_atol=2e-3)
    assert model.config["network"]["num_classes"] == 0 and model.encoder.classes == []


def test_network_shapes_and_labels():
    torch.manual_seed(0)
    net = FrameUNet.from_config({"clip_samples": 800, "frame": 40, "channels": [16, 32], "blocks": 1, "emb": 32,
                                 "attention": True, "num_classes": 3}).eval()
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised output layers would hide the label's effect
            p.copy_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 1, 800)
        a = net(x, torch.tensor([0.1, 0.2]), label=torch.tensor([0, 2]))
        b = net(x, torch.tensor([0.1, 0.2]), label=torch.tensor([1, 2]))
        c = net(x, torch.tensor([0.1, 0.2]))  # no label: the extra "null" row
    assert a.shape == (2, 1, 800) and torch.isfinite(a).all()
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert not torch.allclose(c[1], b[1])
    with pytest.raises(PolydiffError, match=r"expected \[B, 1, 800\]"):
        net(torch.randn(1, 1, 400), torch.tensor([0.1]))
    with pytest.raises(PolydiffError, match="must be frame"):
        FrameUNet.from_config({"clip_samples": 810, "frame": 40})


def test_skip_bands_start_at_zero_and_can_remove_the_skip_connection():
    """The band masks leave a network's output unchanged until they are trained (a fine-tuning run that adds
    them starts from the model it was given); masks of 1 in every band turn EDM's D = c_skip x + c_out F
    into c_out F, and a mask of 1 in the top band alone removes the skip connection's upper octave."""
    from polydiff.precond import make_denoiser

    torch.manual_seed(0)
    cfg = {"clip_samples": 800, "frame": 40, "channels": [16, 32], "blocks": 1, "emb": 32, "attention": False,
           "num_classes": 3}
    plain = FrameUNet.from_config(cfg).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    masked = FrameUNet.from_config({**cfg, "skip_bands": 4, "sigma_data": 0.5}).eval()
    missing = masked.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["skip_mask.bias", "skip_mask.weight"]
    d_plain, d_masked = make_denoiser(plain, "edm", 0.5), make_denoiser(masked, "edm", 0.5)
    x, lab = torch.randn(2, 1, 800), torch.tensor([0, 2])
    for sigma in (0.01, 0.3, 4.0):
        s = torch.full((2,), sigma)
        with torch.no_grad():
            assert torch.equal(d_masked(x, s, label=lab), d_plain(x, s, label=lab))
            masked.skip_mask.bias.fill_(1.0)
            c_skip = 0.25 / (sigma ** 2 + 0.25)
            assert torch.allclose(d_masked(x, s, label=lab), d_plain(x, s, label=lab) - c_skip * x, atol=1e-4)
            masked.skip_mask.bias.zero_()
            masked.skip_mask.bias[-40:] = 1.0  # the top band's masks (2-4 kHz of an 8 kHz clip)
            removed = d_plain(x, s, label=lab) - d_masked(x, s, label=lab)
            got, full = torch.fft.rfft(removed[0, 0]).abs() ** 2, torch.fft.rfft(c_skip * x[0, 0]).abs() ** 2
            # the energy removed above / below a quarter of the sample rate (bin k is k / 800 of it)
            assert got[230:380].sum() / full[230:380].sum() > 0.95 and got[10:170].sum() / full[10:170].sum() < 0.01
            masked.skip_mask.bias.zero_()


def test_skip_bands_need_edm_and_get_sigma_data():
    from polydiff_audio.encoder import AudioEncoder, configure

    cfg = configure({"parameterisation": "edm", "sigma_data": 0.7, "network": {"skip_bands": 4}}, AudioEncoder())
    assert cfg["network"]["sigma_data"] == 0.7
    with pytest.raises(PolydiffError, match="skip_bands"):
        configure({"parameterisation": "eps", "network": {"skip_bands": 4}}, AudioEncoder())


def test_cli_train_init_adds_skip_bands_to_a_trained_model(tiny_model_path, tmp_path, helpers):
    """``polydiff train audio --init MODEL``: fine-tuning keeps the model's encoder and network; a network
    setting the recipe adds (here through the Python API's overrides) starts from its initialization."""
    from polydiff.checkpoint import load_bundle, split_prefix
    from polydiff.model import train_modality

    summary = train_modality(registry().modality("audio"), recipe="fsdd_sample", steps=1, out=tmp_path / "ft",
                             overrides={"network": {"skip_bands": 4},
                                        "train": {"batch_size": 2, "warmup": 0, "ckpt_every": 100}},
                             init=tiny_model_path, device="cpu", progress=False)
    assert summary["init"]["new_layers"] == ["skip_mask.bias", "skip_mask.weight"]
    base_t, base_m = load_bundle(tiny_model_path)
    tuned_t, tuned_m = load_bundle(summary["model_path"])
    assert tuned_m["encoder"] == base_m["encoder"]
    assert tuned_m["config"]["network"] == {**base_m["config"]["network"], "skip_bands": 4, "sigma_data": 0.5}
    assert "ema.skip_mask.weight" in tuned_t
    r = helpers.run_cli("sample", "audio", "--model", summary["model_path"], "-n", "1", "--steps", "2",
                        "--label", "3", "--out", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def folder_with_corrupt_wav(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ["1_jackson_0.wav", "1_theo_0.wav", "2_lucas_0.wav", "2_theo_0.wav"]:
        (data / name).write_bytes((datasets.SAMPLE_DIR / name).read_bytes())
    (data / "3_jackson_0.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return data


def test_cli_train_strict_fails_on_a_corrupt_wav(folder_with_corrupt_wav, tmp_path, helpers):
    r = helpers.run_cli("train", "audio", "--data", folder_with_corrupt_wav, "--strict", "--steps", "1",
                        "--batch-size", "2", "--out", tmp_path / "run", "--json")
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "3_jackson_0.wav: cannot decode audio" in lines[0], r.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_cli_train_skips_a_corrupt_wav_with_a_warning(folder_with_corrupt_wav, tmp_path, helpers):
    r = helpers.run_cli("train", "audio", "--data", folder_with_corrupt_wav, "--steps", "1", "--batch-size", "2",
                        "--out", tmp_path / "run", "--json")
    assert r.returncode == 0, r.stderr
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 1 unreadable file(s), using 4 of 5" in warnings[0], r.stderr
    assert "3_jackson_0.wav" in warnings[0]
    summary = json.loads(r.stdout)
    assert summary["step"] == 1 and (tmp_path / "run" / "model.safetensors").exists()


def test_cli_sample_writes_wavs_and_spectrograms(tiny_model_path, tmp_path, helpers):
    out = tmp_path / "dir"
    r = helpers.run_cli("sample", "audio", "--model", tiny_model_path, "--label", "7", "-n", "2", "--steps", "4",
                        "--out", f"{out}/", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv", "sample_000.wav", "sample_001.wav", "spectrograms.png"]
    for name in ["sample_000.wav", "sample_001.wav"]:
        info = sf.info(str(out / name))
        assert info.samplerate == 8000 and info.channels == 1 and info.frames == 8000
        x, _ = sf.read(str(out / name), dtype="float32")
        assert np.isfinite(x).all()
    assert (out / "spectrograms.png").stat().st_size > 1000
