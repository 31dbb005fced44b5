"""`polydiff inpaint audio` and `polydiff denoise audio` (polydiff_audio.tasks).

Two kinds of model: the tiny trained model (the plumbing: files, formats, errors, the CLI) and the same
model with its denoiser replaced by an *oracle* that knows the clean signal is a sinusoid of a given
frequency and returns the least-squares sinusoid through its input. With the oracle, a correct pipeline
must give back the clean sinusoid, which checks alignment (window, gap, resampling) and the loudness gain
end to end."""
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from polydiff.errors import InputError, PolydiffError

from polydiff_audio import datasets
from polydiff_audio.encoder import AudioEncoder
from polydiff_audio.tasks import (SIGMA_FLOOR, crossfade_weights, denoise, estimate_noise, inpaint, load_model,
                                  window_starts)

SPEECH = datasets.SAMPLE_DIR / "5_jackson_0.wav"  # 3394 samples (0.424 s) of 8 kHz speech


def sinusoid_oracle(freq, rate):
    """D(x, sigma) = the least-squares fit of a*sin + b*cos at ``freq`` Hz to each x (sampled at ``rate``)."""
    def D(x, sigma, **cond):
        t = torch.arange(x.shape[-1], dtype=torch.float64) / rate
        basis = torch.stack([torch.sin(2 * math.pi * freq * t), torch.cos(2 * math.pi * freq * t)], 1)
        coef = torch.linalg.lstsq(basis, x.reshape(x.shape[0], -1).double().T).solution
        return (basis @ coef).T.reshape(x.shape).to(x.dtype)
    return D


def read(path, dtype="float32"):
    x, sr = sf.read(str(path), dtype=dtype, always_2d=True)
    return x.T, sr


# --------------------------------------------------------------------------------------- inpainting
def test_inpaint_keeps_everything_outside_the_gap_exactly(tiny_model, tmp_path):
    out = tmp_path / "filled.wav"
    s = inpaint(tiny_model, SPEECH, out, 0.2, 0.3, steps=6, seed=1)
    x, sr = read(SPEECH)
    y, sr2 = read(out)
    a, b = 1600, 2400
    assert sr2 == sr == 8000 and y.shape == x.shape and s["gap_samples"] == b - a
    assert np.array_equal(y[:, :a], x[:, :a]) and np.array_equal(y[:, b:], x[:, b:])
    assert np.isfinite(y).all() and (y[:, a:b] != x[:, a:b]).mean() > 0.9
    # the same seed gives the same fill, another seed another one
    s2 = inpaint(tiny_model, SPEECH, tmp_path / "again.wav", 0.2, 0.3, steps=6, seed=1)
    assert np.array_equal(read(tmp_path / "again.wav")[0], y) and s2["seed"] == 1
    inpaint(tiny_model, SPEECH, tmp_path / "other.wav", 0.2, 0.3, steps=6, seed=2)
    assert not np.array_equal(read(tmp_path / "other.wav")[0], y)


@pytest.mark.parametrize("subtype, dtype", [("PCM_24", "int32"), ("FLOAT", "float64")])
def test_inpaint_keeps_the_sample_format(tiny_model, tmp_path, helpers, subtype, dtype):
    rng = np.random.default_rng(3)
    x = np.clip(rng.normal(0, 0.2, (1, 11025)), -1, 1)
    src = helpers.write(tmp_path / "in.wav", x, 22050, subtype=subtype)
    out = tmp_path / "out.wav"
    inpaint(tiny_model, src, out, 0.1, 0.15, steps=3, resample_passes=2)
    assert sf.info(str(out)).subtype == subtype and sf.info(str(out)).samplerate == 22050
    xi, yi = read(src, dtype)[0], read(out, dtype)[0]
    a, b = round(0.1 * 22050), round(0.15 * 22050)
    assert np.array_equal(yi[:, :a], xi[:, :a]) and np.array_equal(yi[:, b:], xi[:, b:])
    assert not np.array_equal(yi[:, a:b], xi[:, a:b])


def test_inpaint_fills_the_gap_with_what_fits_around_it(tiny_model, tmp_path, helpers):
    """16 kHz stereo, a 200 Hz tone with a dropout; the oracle model must put the tone back in the gap,
    at the input's level, in phase, in both channels, and the rest stays bit for bit."""
    clean = helpers.sine(200, 1.6, 16000, amplitude=0.3, phase=0.4)
    damaged = np.stack([clean, clean]).copy()
    a, b = int(0.9 * 16000), int(1.05 * 16000)
    damaged[:, a:b] = 0.0
    src = helpers.write(tmp_path / "tone.wav", damaged, 16000)
    tiny_model.denoiser = sinusoid_oracle(200, tiny_model.encoder.sample_rate)
    out = tmp_path / "fixed.wav"
    s = inpaint(tiny_model, src, out, 0.9, 1.05, steps=8)
    assert s["window"][0] <= 0.9 and s["window"][1] >= 1.05 and s["window"][1] - s["window"][0] == 1.0
    x, _ = read(src)
    y, sr = read(out)
    assert sr == 16000 and y.shape == (2, len(clean))
    assert np.array_equal(y[:, :a], x[:, :a]) and np.array_equal(y[:, b:], x[:, b:])
    # (0.02 at the gap's edges if the resampler's smear of the zeroed gap were kept as known audio)
    assert np.abs(y[:, a:b] - clean[a:b]).max() < 0.003, np.abs(y[:, a:b] - clean[a:b]).max()


@pytest.mark.parametrize("start, end", [(0.0, 0.05), (0.35, 3394 / 8000)])
def test_inpaint_at_the_ends_of_a_short_file(tiny_model, tmp_path, start, end):
    """The file (0.424 s) is shorter than the clip: the window is padded with silence, the gap may touch
    either end of the file."""
    out = tmp_path / "edge.wav"
    inpaint(tiny_model, SPEECH, out, start, end, steps=3)
    x, _ = read(SPEECH)
    y, _ = read(out)
    a, b = round(start * 8000), min(round(end * 8000), x.shape[1])
    assert y.shape == x.shape and np.isfinite(y).all()
    assert np.array_equal(y[:, :a], x[:, :a]) and np.array_equal(y[:, b:], x[:, b:])


def test_inpaint_of_silence_has_no_nan(tiny_model, tmp_path, helpers):
    src = helpers.write(tmp_path / "silence.wav", np.zeros(12000, np.float32), 8000)
    out = tmp_path / "out.wav"
    inpaint(tiny_model, src, out, 0.5, 0.7, steps=3)
    y, _ = read(out)
    assert np.isfinite(y).all() and not y[:, :4000].any() and not y[:, 5600:].any()


@pytest.mark.parametrize("start, end, needle", [
    (0.3, 0.3, r"--start \(0.3 s\) must be before --end"),
    (0.4, 0.2, r"--start \(0.4 s\) must be before --end"),
    (-0.1, 0.2, r"--start must be a number of seconds >= 0"),
    (0.1, 0.9, r"--end: 0.9 s is past the end of .*5_jackson_0.wav \(0.424 s long\)"),
    (0.0, 0.00001, r"--start/--end: the gap .* holds no sample"),
])
def test_inpaint_bad_gap(tiny_model, tmp_path, start, end, needle):
    with pytest.raises(PolydiffError, match=needle):
        inpaint(tiny_model, SPEECH, tmp_path / "o.wav", start, end)
    assert not (tmp_path / "o.wav").exists()


def test_inpaint_gap_longer_than_the_clip_and_bad_options(tiny_model, tmp_path, helpers):
    src = helpers.write(tmp_path / "long.wav", np.zeros(24000, np.float32) + 0.1, 8000)
    with pytest.raises(PolydiffError, match=r"the gap is 1.200 s; it must be shorter than the model's clip "
                                             r"\(1.000 s\)"):
        inpaint(tiny_model, src, tmp_path / "o.wav", 0.5, 1.7)
    with pytest.raises(PolydiffError, match="--resample must be at least 1"):
        inpaint(tiny_model, src, tmp_path / "o.wav", 0.5, 0.7, resample_passes=0)
    with pytest.raises(PolydiffError, match="--steps must be at least 1"):
        inpaint(tiny_model, src, tmp_path / "o.wav", 0.5, 0.7, steps=0)
    with pytest.raises(InputError, match=r"o.mp3: unsupported output format '.mp3'"):
        inpaint(tiny_model, src, tmp_path / "o.mp3", 0.5, 0.7)
    with pytest.raises(InputError, match="label '10' is not one of this model's classes"):
        inpaint(tiny_model, src, tmp_path / "o.wav", 0.5, 0.7, label="10")


# --------------------------------------------------------------------------------------- denoising
def test_estimate_noise_and_windows():
    rng = np.random.default_rng(0)
    assert abs(estimate_noise(rng.normal(0, 0.3, 20000)) / 0.3 - 1) < 0.03
    enc = AudioEncoder()
    speech = enc.normalize(enc.load(datasets.SAMPLE_DIR / "8_lucas_0.wav")).astype(np.float64)  # RMS 0.5
    assert estimate_noise(speech) < 0.01
    for s in (0.05, 0.2):  # 20 and 8 dB SNR: the estimate errs upwards, by at most a quarter
        assert 0.95 < estimate_noise(speech + rng.normal(0, s, len(speech))) / s < 1.25
    # the first difference, which this estimator improves on, sees speech where there is none
    dense = enc.normalize(enc.load(datasets.SAMPLE_DIR / "5_jackson_0.wav")).astype(np.float64)
    assert estimate_noise(dense) < 0.6 * np.median(np.abs(np.diff(dense))) / 0.6745 / math.sqrt(2)
    assert estimate_noise(np.zeros(2)) == 0.0
    assert window_starts(5000, 8000) == [0] and window_starts(8000, 8000) == [0]
    assert window_starts(20000, 8000) == [0, 4000, 8000, 12000]
    # the crossfaded windows add up to any signal, everywhere, for any length
    for n in (8001, 13000, 20000, 23999):
        starts = window_starts(n, 8000)
        assert starts[-1] == n - 8000 and all(b - a <= 4000 for a, b in zip(starts, starts[1:]))
        acc, wsum = np.zeros(n), np.zeros(n)
        sig = rng.normal(size=n)
        for s in starts:
            w = crossfade_weights(8000, s == starts[0], s == starts[-1])
            acc[s:s + 8000] += w * sig[s:s + 8000]
            wsum[s:s + 8000] += w
        assert wsum.min() > 0.4 and np.allclose(acc / wsum, sig)


def test_denoise_removes_noise_with_a_matched_level(tiny_model, tmp_path, helpers):
    """2.3 s of a 50 Hz tone in white noise at 16 kHz stereo, through the oracle: the estimated level is
    the true one, and the written 8 kHz mono result is close to the clean tone over every window."""
    rng = np.random.default_rng(5)
    clean16 = helpers.sine(50, 2.3, 16000, amplitude=0.25)
    noisy = np.stack([clean16, clean16]) + rng.normal(0, 0.03, (2, len(clean16)))
    src = helpers.write(tmp_path / "noisy.wav", noisy.astype(np.float32), 16000, subtype="FLOAT")
    tiny_model.denoiser = sinusoid_oracle(50, tiny_model.encoder.sample_rate)
    out = tmp_path / "clean.wav"
    s = denoise(tiny_model, src, out, steps=5)
    y, sr = read(out)
    assert sr == 8000 and y.shape == (1, 18400) and s["windows"] == 4 and s["sigma_source"] == "estimated"
    # noise of the mono mix: 0.03 / sqrt(2) (independent channels); resampled to 8 kHz, the 0.99 * 4 kHz
    # of 8 kHz of bandwidth that the resampler keeps
    assert abs(10 ** (s["noise_dbfs"] / 20) / (0.03 / math.sqrt(2) * math.sqrt(0.495)) - 1) < 0.05
    assert s["sigma_start"] == pytest.approx(max(s["noise_sigma"], SIGMA_FLOOR))
    clean8 = helpers.sine(50, 2.3, 8000, amplitude=0.25)
    err = y[0, 200:-200] - clean8[200:-200]
    assert np.sqrt(np.mean(err ** 2)) < 0.001  # the input's noise is 0.015 at 8 kHz


def test_denoise_with_the_tiny_model(tiny_model, tmp_path, helpers):
    rng = np.random.default_rng(2)
    x, _ = read(SPEECH)
    noisy = np.concatenate([x[0], x[0], x[0]]) + rng.normal(0, 0.02, 3 * x.shape[1])
    src = helpers.write(tmp_path / "n.flac", noisy, 8000)
    out = tmp_path / "c.wav"
    s = denoise(tiny_model, src, out, sigma="0.3", steps=3, label="5")
    y, sr = read(out)
    assert sr == 8000 and y.shape == (1, 3 * x.shape[1]) and np.isfinite(y).all() and np.abs(y).max() > 0
    assert s["sigma_source"] == "given" and s["noise_sigma"] == 0.3 and s["sigma_start"] == 0.3
    assert s["windows"] == 2  # 1.27 s at 8 kHz: two overlapping 1 s clips
    s = denoise(tiny_model, src, out, sigma=0, steps=2)
    assert s["sigma_start"] == SIGMA_FLOOR
    for bad in ["-1", "loud", "nan"]:
        with pytest.raises(PolydiffError, match="--sigma must be 'auto' or a number >= 0"):
            denoise(tiny_model, src, out, sigma=bad)


def test_denoise_of_silence_writes_silence(tiny_model, tmp_path, helpers):
    src = helpers.write(tmp_path / "quiet.wav", np.zeros((2, 4410), np.float32), 44100)
    out = tmp_path / "q.wav"
    s = denoise(tiny_model, src, out)
    y, sr = read(out)
    assert sr == 8000 and y.shape == (1, 800) and np.isfinite(y).all() and not y.any()
    assert s["noise_sigma"] == 0.0 and s["noise_dbfs"] is None
    json.dumps(s, allow_nan=False)  # valid JSON: no NaN or infinities


def test_no_pretrained_model_is_a_clear_error(monkeypatch):
    from polydiff.plugins import registry

    monkeypatch.setattr(registry().modality("audio"), "pretrained", {})
    with pytest.raises(PolydiffError, match="no pretrained audio model is bundled; give --model PATH"):
        load_model(None)


# --------------------------------------------------------------------------------------- the commands
def make_bad(kind, folder):
    if kind == "missing":
        return folder / "missing.wav"
    p = folder / {"corrupt": "corrupt.wav", "zero-length": "empty.wav", "unsupported": "clip.aiff"}[kind]
    if kind == "corrupt":
        p.write_bytes(b"RIFF$\x00\x00\x00WAVEfmt " + bytes(64))
    elif kind == "zero-length":
        sf.write(str(p), np.zeros(0, np.float32), 8000, subtype="PCM_16")
    else:
        sf.write(str(p), np.zeros(100, np.float32), 8000, format="AIFF")
    return p


BAD = {"missing": "no such file", "corrupt": "cannot decode audio", "zero-length": "zero-length audio",
       "unsupported": "unsupported audio format '.aiff'"}


def command_args(command, path, out):
    if command == "inpaint":
        return ["inpaint", "audio", str(path), "--start", "0.1", "--end", "0.2", "--out", str(out)]
    return ["denoise", "audio", str(path), "--out", str(out)]


@pytest.mark.parametrize("kind, command", [("missing", "inpaint"), ("corrupt", "denoise"),
                                           ("zero-length", "inpaint"), ("unsupported", "denoise")])
def test_cli_bad_input_is_one_line(tmp_path, helpers, kind, command):
    """Through the real entry point: exit status 1 and one stderr line naming the file."""
    path = make_bad(kind, tmp_path)
    r = helpers.run_cli(*command_args(command, path, tmp_path / "out.wav"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert str(path) in lines[0] and BAD[kind] in lines[0] and r.stdout == ""
    assert not (tmp_path / "out.wav").exists()


@pytest.fixture(scope="module")
def cli():
    """A copy of the ``polydiff`` group (same error handling) with the audio commands added, for in-process
    runs; the real group is left as it is."""
    import copy

    from polydiff.cli import cli as real

    from polydiff_audio.tasks import add_commands

    group = copy.copy(real)
    group.commands = {k: v for k, v in real.commands.items() if k not in ("inpaint", "denoise")}
    add_commands(group)
    return group


@pytest.mark.parametrize("command", ["inpaint", "denoise"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_cli_bad_input_in_process(cli, tmp_path, tiny_model_path, kind, command):
    path = make_bad(kind, tmp_path)
    r = CliRunner().invoke(cli, command_args(command, path, tmp_path / "out.wav") + ["--model", tiny_model_path])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), r.output
    assert BAD[kind] in lines[0] and not (tmp_path / "out.wav").exists()


def test_cli_inpaint_stereo_16k_is_exact_outside_the_gap(tiny_model_path, tmp_path, helpers):
    rng = np.random.default_rng(7)
    left = helpers.sine(300, 1.5, 16000, amplitude=0.4) + rng.normal(0, 0.01, 24000).astype(np.float32)
    src = helpers.write(tmp_path / "st16.wav", np.stack([left, -0.5 * left]), 16000)
    out = tmp_path / "st16_filled.wav"
    r = helpers.run_cli("inpaint", "audio", src, "--start", "0.6", "--end", "0.8", "--out", out, "--model",
                        tiny_model_path, "--steps", "4", "--resample", "2", "--label", "3", "--cfg-scale", "2",
                        "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["out"] == str(out) and s["channels"] == 2 and s["sample_rate"] == 16000 and s["resample"] == 2
    x, _ = read(src)
    y, sr = read(out)
    a, b = 9600, 12800
    assert sr == 16000 and y.shape == x.shape == (2, 24000)
    assert np.array_equal(y[:, :a], x[:, :a]) and np.array_equal(y[:, b:], x[:, b:])
    assert (y[:, a:b] != x[:, a:b]).mean() > 0.9 and np.array_equal(y[0, a:b], y[1, a:b])


def test_cli_denoise_writes_model_rate_mono(cli, tiny_model_path, tmp_path, helpers):
    rng = np.random.default_rng(8)
    noisy = helpers.sine(250, 1.3, 22050, amplitude=0.3) + rng.normal(0, 0.05, 28665).astype(np.float32)
    src = helpers.write(tmp_path / "n22.wav", np.stack([noisy, noisy]), 22050)
    out = tmp_path / "n22_clean.wav"
    r = CliRunner().invoke(cli, ["denoise", "audio", str(src), "--out", str(out), "--model", tiny_model_path,
                                 "--steps", "3", "--sampler", "heun"])
    assert r.exit_code == 0, r.output
    line = r.stdout.strip()
    assert line.startswith("noise level ") and "(estimated; " in line and "(8000 Hz mono, 1.30 s) [model " in line
    assert str(out) in line and len(line.splitlines()) == 1
    y, sr = read(out)
    assert sr == 8000 and y.shape == (1, 10400) and np.isfinite(y).all()
    r = CliRunner().invoke(cli, ["denoise", "audio", str(src), "--out", str(out), "--model", tiny_model_path,
                                 "--label", "12"])
    assert r.exit_code == 1 and r.stderr.strip().startswith("Error: label '12' is not one of this model's classes")
    r = CliRunner().invoke(cli, ["denoise", "audio", "--help"])
    assert "MONO at the MODEL's sample rate" in " ".join(r.stdout.split())
