"""AudioEncoder: resampling and downmixing on load, loudness normalization, crop / pad, labels, round trips."""
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.errors import InputError

from polydiff_audio import datasets
from polydiff_audio.encoder import AudioEncoder, Clips, make_cond


def test_44k_stereo_file_becomes_8k_mono(tmp_path, helpers):
    """A 44.1 kHz stereo 440 Hz sine read by an 8 kHz model: mono (mean of the channels), 8 kHz, right
    length, same frequency and amplitude."""
    left = helpers.sine(440, 0.75, 44100, amplitude=0.6)
    path = helpers.write(tmp_path / "st.wav", np.stack([left, 0.5 * left]), 44100)
    wave = AudioEncoder(sample_rate=8000).load(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 6000  # 0.75 s at 8 kHz
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    assert abs(np.fft.rfftfreq(len(wave), 1 / 8000)[spec.argmax()] - 440) <= 2
    middle = wave[500:-500]  # away from the resampler's edge effects
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.45 / np.sqrt(2)) < 0.01  # (0.6 + 0.3) / 2 peak


def test_encode_decode_gives_the_loudness_normalized_wave():
    enc = AudioEncoder(sample_rate=8000, clip_samples=8000, rms=0.1, scale=5.0)
    rng = np.random.default_rng(1)
    w = (rng.normal(0, 0.02, 3000) + np.sin(np.arange(3000) / 7)).astype(np.float32)
    x, cond = enc.encode([w])
    assert x.shape == (1, 1, 8000) and "label" not in cond
    assert cond["valid"][0, 0, :3000].eq(1).all() and cond["valid"][0, 0, 3000:].eq(0).all()
    assert x[0, 0, 3000:].eq(0).all()  # padding is silence
    back = enc.decode(x, cond)
    assert isinstance(back, Clips) and len(back.waves[0]) == 3000 and back.sample_rate == 8000
    expected = w * (0.1 / np.sqrt(np.mean(w.astype(np.float64) ** 2)))
    assert np.allclose(back.waves[0], expected, atol=1e-6)
    assert abs(np.sqrt(np.mean(back.waves[0] ** 2)) - 0.1) < 1e-5
    x2, _ = enc.encode(back)
    assert torch.allclose(x, x2, atol=1e-5)


def test_silent_clip_stays_silent_without_nan():
    enc = AudioEncoder()
    x, cond = enc.encode([np.zeros(4000, np.float32), np.full(9000, 1e-9, np.float32)])
    assert torch.isfinite(x).all() and x.abs().max() == 0
    back = enc.decode(x, cond)
    assert [len(w) for w in back.waves] == [4000, 8000]
    assert all(np.isfinite(w).all() and not w.any() for w in back.waves)
    assert enc.loudness_gain(np.zeros(10)) == 0.0 and enc.loudness_gain(np.zeros(0)) == 0.0


def test_long_clip_is_cropped_to_its_loudest_window():
    enc = AudioEncoder(clip_samples=8000)
    w = np.zeros(20000, np.float32)
    w[12000:13000] = np.sin(np.arange(1000) / 3)  # a burst in the last half
    x, cond = enc.encode([w])
    assert cond["valid"].sum() == 8000
    burst = x[0, 0].numpy()
    assert np.abs(burst).max() > 1.0  # the burst is in the window, at speech loudness
    assert abs(np.sqrt(np.mean(burst.astype(np.float64) ** 2)) - 0.5) < 1e-4


def test_fsdd_sample_labels_and_make_cond():
    clips = datasets.fsdd_sample()
    assert len(clips) == 30 and clips.sample_rate == 8000
    assert clips.classes == [str(d) for d in range(10)]
    i = clips.names.index("7_theo_0.wav")
    assert clips.labels[i] == 7
    enc = AudioEncoder().fit(clips)
    x, cond = enc.encode(clips)
    assert x.shape == (30, 1, 8000) and cond["label"][i] == 7
    assert make_cond(enc, 4)["label"].tolist() == [0, 1, 2, 3]
    assert make_cond(enc, 2, label="7")["label"].tolist() == [7, 7]
    assert make_cond(enc, 2, label="none")["label"].tolist() == [-1, -1]
    for bad in ["12", "-1", "cat"]:
        with pytest.raises(InputError, match=r"^label .* is not one of this model's classes \(0, 1,"):
            make_cond(enc, 2, label=bad)
    with pytest.raises(InputError, match="trained without labels"):
        make_cond(AudioEncoder(), 2, label="3")


def test_folder_with_a_corrupt_file(tmp_path):
    for name in ["1_jackson_0.wav", "2_theo_0.wav"]:
        (tmp_path / name).write_bytes((datasets.SAMPLE_DIR / name).read_bytes())
    (tmp_path / "3_lucas_0.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(InputError, match="3_lucas_0.wav: cannot decode audio"):
        AudioEncoder().read(tmp_path, strict=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clips = AudioEncoder().read(tmp_path)
    assert len(clips) == 2 and clips.classes == ["1", "2"]
    assert len(caught) == 1 and "skipped 1 unreadable file(s), using 2 of 3" in str(caught[0].message)


def test_write_folder_and_file(tmp_path):
    enc = AudioEncoder()
    clips = Clips([np.sin(np.arange(800) / 5).astype(np.float32) * 0.3, np.zeros(400, np.float32)], 8000,
                  labels=[3, -1], classes=[str(d) for d in range(10)])
    files = enc.write(clips, tmp_path / "out")
    assert [f.name for f in files] == ["sample_000.wav", "sample_001.wav", "labels.csv", "spectrograms.png"]
    assert files[2].read_text().splitlines() == ["file,label", "sample_000.wav,3", "sample_001.wav,none"]
    assert sf.info(str(files[0])).samplerate == 8000 and sf.info(str(files[0])).frames == 800
    one = enc.write(Clips(clips.waves[:1], 8000), tmp_path / "one.flac")
    assert one[0].suffix == ".flac" and one[1].name == "one.png"
    with pytest.raises(InputError, match="a file holds one clip"):
        enc.write(clips, tmp_path / "two.wav")


def test_metadata_rebuilds_the_encoder():
    enc = AudioEncoder(sample_rate=16000, clip_samples=4000, rms=0.2, scale=2.0, classes=["a", "b"])
    again = AudioEncoder.from_metadata(enc.metadata())
    assert again.metadata() == enc.metadata() and again.seconds == 0.25
