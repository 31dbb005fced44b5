"""polydiff_audio.io: reading (float and native), bad files as one-line InputErrors, atomic and exact writing."""
import numpy as np
import pytest
import soundfile as sf

from polydiff.errors import InputError

from polydiff_audio import io as audio_io


def make_bad(kind, folder):
    """A bad input file of the given kind (or a path that does not exist)."""
    if kind == "missing":
        return folder / "missing.wav"
    if kind == "corrupt":
        p = folder / "corrupt.wav"
        p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
        return p
    if kind == "zero-length":
        p = folder / "empty.wav"
        sf.write(str(p), np.zeros(0, np.float32), 8000, subtype="PCM_16")
        return p
    if kind == "unsupported":
        p = folder / "sound.mp3"
        p.write_bytes(b"ID3" + bytes(100))
        return p
    raise ValueError(kind)


BAD = {"missing": "no such file", "corrupt": "cannot decode audio", "zero-length": "zero-length audio",
       "unsupported": "unsupported audio format '.mp3'"}


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("reader", [audio_io.read_audio, audio_io.read_audio_native])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, kind, reader):
    path = make_bad(kind, tmp_path)
    with pytest.raises(InputError) as e:
        reader(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and BAD[kind] in msg and "\n" not in msg


def test_folder_and_non_finite(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        audio_io.read_audio(tmp_path)
    p = tmp_path / "nan.wav"
    sf.write(str(p), np.array([0.0, np.nan, 0.1], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN or infinite"):
        audio_io.read_audio(p)


def test_read_gives_channels_first_float32(tmp_path):
    data = np.stack([np.linspace(-0.5, 0.5, 100), np.full(100, 0.25)]).astype(np.float32)
    p = tmp_path / "st.flac"
    sf.write(str(p), data.T, 22050, subtype="PCM_16")
    x, sr = audio_io.read_audio(p)
    assert sr == 22050 and x.shape == (2, 100) and x.dtype == np.float32
    assert np.abs(x - data).max() < 1 / 2 ** 14


@pytest.mark.parametrize("fmt, subtype, dtype", [(".wav", "PCM_16", np.int16), (".wav", "PCM_24", np.int32),
                                                 (".flac", "PCM_24", np.int32), (".wav", "FLOAT", np.float64)])
def test_native_read_write_is_bit_exact(tmp_path, fmt, subtype, dtype):
    rng = np.random.default_rng(0)
    data = np.clip(rng.normal(0, 0.4, (2, 500)), -1, 1).astype(np.float32)
    data[0, :3] = [-1.0, 1.0, 0.999]  # full scale, where float <-> integer conventions differ
    src = tmp_path / f"src{fmt}"
    sf.write(str(src), data.T, 16000, subtype=subtype)
    native, sr, st = audio_io.read_audio_native(src)
    assert st == subtype and native.dtype == dtype and native.shape == (2, 500) and sr == 16000
    as_float, _ = audio_io.read_audio(src)
    assert np.array_equal(audio_io.to_float(native), as_float)
    dst = audio_io.write_audio(tmp_path / f"dst{fmt}", native, sr, subtype=st)
    again, sr2, st2 = audio_io.read_audio_native(dst)
    assert st2 == subtype and sr2 == 16000 and np.array_equal(again, native)
    assert np.array_equal(audio_io.from_float(audio_io.to_float(native), native.dtype), native)


def test_from_float_rounds_and_clips():
    out = audio_io.from_float(np.array([0.0, 0.5, -1.5, 2.0, np.nan, 1 / 2 ** 15 * 0.6]), np.int16)
    assert out.tolist() == [0, 16384, -32768, 32767, 0, 1]


def test_write_audio_clips_is_atomic_and_checks_the_format(tmp_path):
    p = audio_io.write_audio(tmp_path / "sub" / "x.wav", np.array([0.5, 2.0, -3.0], np.float32), 8000)
    x, sr = audio_io.read_audio(p)
    assert sr == 8000 and sf.info(str(p)).subtype == "PCM_16"
    assert np.allclose(x[0], [0.5, 1.0, -1.0], atol=1e-4)
    assert sorted(f.name for f in p.parent.iterdir()) == ["x.wav"]  # no temporary file left
    with pytest.raises(InputError, match="unsupported audio format '.mp3'"):
        audio_io.write_audio(tmp_path / "x.mp3", np.zeros(4), 8000)
    # FLAC cannot hold floats: the default 16-bit PCM is written instead of failing
    q = audio_io.write_audio(tmp_path / "f.flac", np.zeros(4, np.float32), 8000, subtype="FLOAT")
    assert sf.info(str(q)).subtype == "PCM_16"


def test_list_audio_skips_hidden_and_other_files(tmp_path):
    for name in ["b.wav", "a.FLAC", "sub/c.ogg", ".a.wav.tmp", "._d.wav", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in audio_io.list_audio(tmp_path)] == ["a.FLAC", "b.wav",
                                                                                         "sub/c.ogg"]
