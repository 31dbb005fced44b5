"""polydiff_image.io and the encoder's file side: image files (Pillow) and .npy/.npz arrays in, PNG/.npz out;
bad files as one-line InputErrors naming the file; folders with class sub-folders and unreadable files."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from polydiff.errors import InputError

from polydiff_image import io as image_io
from polydiff_image.encoder import ImageEncoder, Images


def gradient(h=12, w=10, c=None):
    """A uint8 image whose every pixel differs from its neighbours ([H, W] or [H, W, c])."""
    a = (np.arange(h * w).reshape(h, w) * 7 % 256).astype(np.uint8)
    if c is None:
        return a
    return np.stack([a, 255 - a, (a // 2 + 60).astype(np.uint8)][:c], axis=-1)


# --------------------------------------------------------------------------------------- image files
def test_png_gray_and_rgb_read_exactly(tmp_path, helpers):
    g = helpers.save(tmp_path / "g.png", gradient())
    c = helpers.save(tmp_path / "c.PNG", gradient(c=3))
    a, b = image_io.read_image(g), image_io.read_image(c)
    assert a.dtype == b.dtype == np.uint8
    assert a.shape == (12, 10, 1) and np.array_equal(a[:, :, 0], gradient())
    assert b.shape == (12, 10, 3) and np.array_equal(b, gradient(c=3))


def test_jpeg_gray_and_rgb(tmp_path, helpers):
    flat = np.full((16, 16), 100, np.uint8)
    g = image_io.read_image(helpers.save(tmp_path / "g.jpg", flat, quality=95))
    assert g.shape == (16, 16, 1) and np.abs(g.astype(int) - 100).max() <= 1
    colour = np.zeros((16, 16, 3), np.uint8) + np.array([200, 50, 10], np.uint8)
    c = image_io.read_image(helpers.save(tmp_path / "c.jpeg", colour, quality=95))
    assert c.shape == (16, 16, 3) and np.abs(c.astype(int) - colour).max() <= 3


def palette_image(index):
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    return im


def test_palette_images(tmp_path):
    index = np.zeros((4, 5), np.uint8)
    index[0, 0], index[1, 1] = 1, 2
    palette_image(index).save(tmp_path / "p.png")
    a = image_io.read_image(tmp_path / "p.png")
    assert a.shape == (4, 5, 3)
    assert a[0, 0].tolist() == [255, 0, 0] and a[1, 1].tolist() == [0, 255, 0] and a[2, 2].tolist() == [0, 0, 0]
    # a transparent palette entry that no pixel uses: opaque, read as RGB
    palette_image(index).save(tmp_path / "unused.png", transparency=7)
    assert np.array_equal(image_io.read_image(tmp_path / "unused.png"), a)
    # a transparent entry that a pixel uses: refused
    palette_image(index).save(tmp_path / "t.png", transparency=2)
    with pytest.raises(InputError, match=r"t\.png: the image has transparent pixels"):
        image_io.read_image(tmp_path / "t.png")


def test_alpha_opaque_is_dropped_transparent_is_an_error(tmp_path, helpers):
    rgba = np.concatenate([gradient(c=3), np.full((12, 10, 1), 255, np.uint8)], axis=2)
    a = image_io.read_image(helpers.save(tmp_path / "opaque.png", rgba))
    assert a.shape == (12, 10, 3) and np.array_equal(a, gradient(c=3))
    la = np.stack([gradient(), np.full((12, 10), 255, np.uint8)], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    b = image_io.read_image(tmp_path / "la.png")
    assert b.shape == (12, 10, 1) and np.array_equal(b[:, :, 0], gradient())
    rgba[3, 4, 3] = 254  # one barely transparent pixel
    p = helpers.save(tmp_path / "see-through.png", rgba)
    with pytest.raises(InputError) as e:
        image_io.read_image(p)
    assert str(e.value).startswith(str(p)) and "transparent" in str(e.value) and "\n" not in str(e.value)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    v = np.arange(0, 256, 4, dtype=np.uint16).reshape(8, 8)  # max 252, not full scale
    Image.fromarray(v * 257).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    a = image_io.read_image(tmp_path / "deep.png")
    assert a.dtype == np.uint8 and a.shape == (8, 8, 1) and np.array_equal(a[:, :, 0], v.astype(np.uint8))


def test_one_bit_png(tmp_path):
    Image.fromarray(np.eye(5, dtype=bool)).save(tmp_path / "bits.png")
    a = image_io.read_image(tmp_path / "bits.png")
    assert a.shape == (5, 5, 1) and np.array_equal(a[:, :, 0], np.eye(5, dtype=np.uint8) * 255)


@pytest.mark.parametrize("kind, needle", [("corrupt", "not a readable image"), ("empty", "not a readable image"),
                                          ("missing", "no such file"), ("folder", "is a folder")])
def test_bad_image_files_are_one_line_errors_naming_the_file(tmp_path, kind, needle):
    p = tmp_path / f"{kind}.png"
    if kind == "corrupt":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "folder":
        p.mkdir()
    with pytest.raises(InputError) as e:
        image_io.read_image(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and needle in msg and "\n" not in msg


def test_truncated_png_is_an_input_error(tmp_path, helpers):
    data = helpers.save(tmp_path / "full.png", gradient(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png: not a readable image"):
        image_io.read_image(tmp_path / "cut.png")


# --------------------------------------------------------------------------------------- arrays
def test_npy_layouts(tmp_path):
    rng = np.random.default_rng(1)
    nhw = rng.integers(0, 256, (5, 8, 6), dtype=np.uint8)
    np.save(tmp_path / "nhw.npy", nhw)
    arr, labels = image_io.read_array_file(tmp_path / "nhw.npy")
    assert labels is None and arr.shape == (5, 8, 6, 1) and np.array_equal(arr[..., 0], nhw)

    nhwc = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc)
    arr, _ = image_io.read_array_file(tmp_path / "nhwc.npy")
    assert arr.shape == (3, 8, 6, 3) and np.array_equal(arr, nhwc)

    np.save(tmp_path / "nchw.npy", np.moveaxis(nhwc, -1, 1))  # [3, 3, 8, 6]: channels first
    arr, _ = image_io.read_array_file(tmp_path / "nchw.npy")
    assert arr.shape == (3, 8, 6, 3) and np.array_equal(arr, nhwc)

    np.save(tmp_path / "one.npy", nhwc[0].astype(np.int64))  # one [H, W, C] image, integer type
    arr, _ = image_io.read_array_file(tmp_path / "one.npy")
    assert arr.shape == (1, 8, 6, 3) and arr.dtype == np.uint8 and np.array_equal(arr[0], nhwc[0])


def test_npy_floats_in_0_1_are_scaled_and_others_refused(tmp_path):
    f = np.array([[[0.0, 0.5, 1.0], [0.25, 1 / 255, 0.999]]], np.float32)  # [1, 2, 3]
    np.save(tmp_path / "f.npy", f)
    arr, _ = image_io.read_array_file(tmp_path / "f.npy")
    assert arr.dtype == np.uint8 and arr[0, :, :, 0].tolist() == [[0, 128, 255], [64, 1, 255]]
    for name, bad, needle in [("over", f * 2, r"float images must lie in \[0, 1\], got values in \[0, 2\]"),
                              ("under", f - 0.5, r"must lie in \[0, 1\]"),
                              ("nan", np.where(f > 0.9, np.nan, f), "NaN or infinite"),
                              ("ints", (f * 300).astype(np.int32), "integer images must hold values 0-255")]:
        np.save(tmp_path / f"{name}.npy", bad)
        with pytest.raises(InputError) as e:
            image_io.read_array_file(tmp_path / f"{name}.npy")
        assert str(e.value).startswith(str(tmp_path / f"{name}.npy")), str(e.value)
        assert e.match(needle)


def test_npz_images_and_labels(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([3, 1, 0, 3]))
    arr, labels = image_io.read_array_file(tmp_path / "d.npz")
    assert arr.shape == (4, 6, 6, 1) and np.array_equal(arr[..., 0], x) and labels.tolist() == [3, 1, 0, 3]
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(4))  # the other key names
    arr, labels = image_io.read_array_file(tmp_path / "xy.npz")
    assert arr.shape == (4, 6, 6, 1) and labels.tolist() == [0, 1, 2, 3]
    # through the encoder: labels and class names 0..max
    imgs = ImageEncoder().read(tmp_path / "d.npz")
    assert imgs.labels == [3, 1, 0, 3] and imgs.classes == ["0", "1", "2", "3"] and imgs.names[1] == "d.npz[1]"

    for name, kw, needle in [("nokey", {"pixels": x}, r"no image array in the archive .*found pixels"),
                             ("count", {"images": x, "labels": np.arange(3)}, "3 labels for 4 images"),
                             ("float", {"images": x, "labels": np.full(4, 0.5)}, "labels must be integers"),
                             ("chan", {"images": rng.integers(0, 256, (2, 5, 6, 7, 2), dtype=np.uint8)},
                              r"expected images shaped \[N, H, W\] or \[N, H, W, C\]")]:
        np.savez(tmp_path / f"{name}.npz", **kw)
        with pytest.raises(InputError, match=needle) as e:
            image_io.read_array_file(tmp_path / f"{name}.npz")
        assert str(e.value).startswith(str(tmp_path / f"{name}.npz"))


def test_bad_array_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    with pytest.raises(InputError, match=r"junk\.npy: not a readable NumPy file"):
        image_io.read_array_file(tmp_path / "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match=r"obj\.npy: not a readable NumPy file"):  # never unpickled
        image_io.read_array_file(tmp_path / "obj.npy")
    np.save(tmp_path / "c5.npy", np.zeros((2, 6, 6, 5), np.uint8))
    with pytest.raises(InputError, match="images have 1 .grayscale. or 3 .RGB. channels, got 5"):
        image_io.read_array_file(tmp_path / "c5.npy")
    with pytest.raises(InputError, match="no such file"):
        image_io.read_array_file(tmp_path / "none.npz")


# --------------------------------------------------------------------------------------- folders
def test_list_images_is_sorted_recursive_and_skips_hidden(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.webp", ".hidden.png", ".cache/d.png", "notes.txt", "x.npy",
                 ".e.png.host.1.tmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in image_io.list_images(tmp_path)] == ["a.JPG", "b.png",
                                                                                           "sub/c.webp"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match=f"{tmp_path}: no image files in this folder"):
        ImageEncoder().read(tmp_path)
    with pytest.raises(InputError, match="no such file or folder"):
        ImageEncoder().read(tmp_path / "missing")
    with pytest.raises(InputError, match=r"unsupported file type '\.txt'"):
        ImageEncoder().read(tmp_path / "notes.txt")


def test_folder_with_a_corrupt_file_warns_with_a_count(tmp_path, helpers):
    for i in range(3):
        helpers.save(tmp_path / f"good{i}.png", gradient() + i)
    (tmp_path / "bad.png").write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imgs = ImageEncoder().read(tmp_path)
    assert len(imgs) == 3 and imgs.names == ["good0.png", "good1.png", "good2.png"] and imgs.labels is None
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "skipped 1 unreadable file(s), using 3 of 4" in msg and "bad.png: not a readable image" in msg
    with pytest.raises(InputError, match=r"bad\.png: not a readable image"):
        ImageEncoder().read(tmp_path, strict=True)
    for f in tmp_path.glob("good*.png"):
        f.write_bytes(b"broken too")
    with pytest.raises(InputError, match="none of the 4 image files could be read"):
        ImageEncoder().read(tmp_path)


# --------------------------------------------------------------------------------------- writing
def images(n, c=1):
    return Images([gradient(c=c) if c == 3 else gradient()[:, :, None] + i for i in range(n)], labels=None)


def test_write_folder(tmp_path):
    imgs = images(3)
    files = ImageEncoder().write(imgs, tmp_path / "out")
    assert [f.name for f in files] == ["sample_000.png", "sample_001.png", "sample_002.png", "grid.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)
    for i in range(3):
        assert np.array_equal(image_io.read_image(files[i]), imgs.arrays[i])
    grid = image_io.read_image(files[-1])
    # 3 images of 12x10 in a 2x2 grid, enlarged 5 times (64 // 12), 2-pixel white borders
    assert grid.shape == (2 * 60 + 3 * 2, 2 * 50 + 3 * 2, 1)
    assert np.array_equal(grid[2:62:5, 2:52:5], imgs.arrays[0]) and (grid[:2] == 255).all()


def test_write_npz_and_single_png(tmp_path):
    rgb = Images([gradient(c=3), 255 - gradient(c=3)], labels=[1, -1], classes=["a", "b"])
    (f,) = ImageEncoder().write(rgb, tmp_path / "x.npz")
    with np.load(f) as z:
        assert z["images"].shape == (2, 12, 10, 3) and z["images"].dtype == np.uint8
        assert np.array_equal(z["images"][1], rgb.arrays[1]) and z["labels"].tolist() == [1, -1]
    (f,) = ImageEncoder().write(Images(rgb.arrays[:1]), tmp_path / "one.png")
    assert np.array_equal(image_io.read_image(f), rgb.arrays[0])
    (f,) = ImageEncoder().write(images(2), tmp_path / "nolabels.npz")
    with np.load(f) as z:
        assert z["labels"].tolist() == [-1, -1]
    with pytest.raises(InputError, match="a file holds one image, got 2"):
        ImageEncoder().write(rgb, tmp_path / "two.png")
    with pytest.raises(InputError, match=r"images are written as PNG; use a \.png name or a folder"):
        ImageEncoder().write(Images(rgb.arrays[:1]), tmp_path / "one.jpg")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        ImageEncoder().write(rgb, tmp_path / "file")
    assert not (tmp_path / "two.png").exists() and not (tmp_path / "one.jpg").exists()


def test_write_png_is_atomic(tmp_path, monkeypatch):
    p = image_io.write_png(tmp_path / "sub" / "a.png", gradient()[:, :, None])
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.png"]  # parents made, no temporary file left
    old = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        image_io.write_png(p, 255 - gradient()[:, :, None])
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.png"] and p.read_bytes() == old  # untouched, no temp
    image_io.write_png(p, 255 - gradient()[:, :, None])
    assert np.array_equal(image_io.read_image(p)[:, :, 0], 255 - gradient())
    assert sorted(os.listdir(tmp_path / "sub")) == ["a.png"]


def test_grid_and_to_uint8_edges():
    tiles = [np.full((2, 3, 1), v, np.uint8) for v in (10, 20, 30)]
    g = image_io.grid(tiles, cols=3, pad=1, background=0)
    assert g.shape == (4, 13, 1) and g[1:3, 1:4].min() == 10 and g[1:3, 9:12].max() == 30 and g[0].max() == 0
    with pytest.raises(InputError, match="no images to tile"):
        image_io.grid([])
    assert image_io.to_uint8(np.array([True, False])).tolist() == [255, 0]
    with pytest.raises(InputError, match="unsupported array type"):
        image_io.to_uint8(np.array(["a"]))
