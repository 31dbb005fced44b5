"""`polydiff demo` for audio: the digits 0-9, one clip each, written as WAV files with a spectrogram picture.

The bundled checkpoint is large and trained elsewhere, so the demo runs here against a tiny untrained
network saved as a bundle: the test checks the plumbing (files, labels, timing), not the sound.
"""
import pytest
import torch

from polydiff.model import Model, default_config, merge_config
from polydiff.plugins import registry
from polydiff_audio import demo
from polydiff_audio.encoder import AudioEncoder
from polydiff_audio.io import read_audio


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 10-class audio model with a small network and a 4-step default sampler."""
    mod = registry().modality("audio")
    enc = AudioEncoder(classes=[str(d) for d in range(10)])
    cfg = merge_config(default_config(), mod.default_config,
                       {"network": {"channels": [16, 32], "blocks": 1, "emb": 32, "attention": False},
                        "sample": {"sampler": "dpmpp_2m", "steps": 4}})
    cfg = mod.configure(cfg, enc)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    Model(mod, mod.network(cfg["network"]), enc, cfg, device="cpu").save(path)
    return path


def test_demo_writes_one_clip_per_digit(tmp_path, tiny_model):
    lines = []
    res = demo.run(tmp_path / "audio", echo=lines.append, device="cpu", model=str(tiny_model))
    wavs = sorted((tmp_path / "audio").glob("*.wav"))
    assert [w.name for w in wavs] == [f"sample_{i:03d}.wav" for i in range(10)]
    for w in wavs:
        samples, sr = read_audio(w)
        assert sr == 8000 and samples.shape == (1, 8000)
    assert (tmp_path / "audio" / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["n"] == 10 and res["steps"] == 4 and res["sampler"] == "dpmpp_2m"
    assert res["audio_seconds"] == pytest.approx(10.0)
    assert res["seconds"] > 0 and res["rtf"] == pytest.approx(res["seconds"] / 10.0)
    assert len(res["files"]) == 12  # 10 clips, their labels.csv and the spectrograms
    text = "\n".join(lines)
    assert "real-time factor" in text and "sample_000.wav = 0" in text


def test_demo_is_seeded(tmp_path, tiny_model):
    a = demo.run(tmp_path / "a", echo=lambda s: None, device="cpu", model=str(tiny_model), n=2)
    b = demo.run(tmp_path / "b", echo=lambda s: None, device="cpu", model=str(tiny_model), n=2)
    for fa, fb in zip(a["files"][:2], b["files"][:2]):
        assert (read_audio(fa)[0] == read_audio(fb)[0]).all()


def test_demo_hook_uses_the_bundled_name(monkeypatch, tmp_path, tiny_model):
    """`polydiff demo` calls the modality's demo hook, which loads the pretrained name "fsdd"."""
    seen = {}
    real_load = Model.load.__func__

    def load(cls, model, modality=None, device=None, ema=True):
        seen["model"], seen["modality"] = model, modality
        return real_load(cls, tiny_model, modality=modality, device=device, ema=ema)

    monkeypatch.setattr(Model, "load", classmethod(load))
    res = registry().modality("audio").demo(tmp_path, echo=lambda s: None, device="cpu")
    assert seen == {"model": "fsdd", "modality": "audio"} and res["n"] == 10
