"""ImageEncoder: exact uint8 <-> [-1, 1] round trips, metadata, fitting (size, channels, classes), the resize
policies, channel matching, labels and make_cond."""
import json
import warnings

import numpy as np
import pytest
import torch

from polydiff.errors import InputError

from polydiff_image import datasets
from polydiff_image.encoder import (ImageEncoder, Images, configure, from_tensor, make_cond, resize_array,
                                    to_tensor)


def every_level(c):
    """A 16 x 16 image holding every uint8 value (in each channel, shifted per channel)."""
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.stack([np.roll(v, 37 * k) for k in range(c)], axis=-1)


@pytest.mark.parametrize("c", [1, 3])
def test_encode_decode_is_exact(c):
    a = every_level(c)
    imgs = Images([a, 255 - a], labels=None)
    enc = ImageEncoder().fit(imgs)
    assert enc.image_size == 16 and enc.channels == c and enc.sample_shape() == (c, 16, 16)
    x, cond = enc.encode(imgs)
    assert x.dtype == torch.float32 and x.shape == (2, c, 16, 16) and cond == {}
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(x[0, 0], torch.from_numpy(a[:, :, 0].astype(np.float32)) / 127.5 - 1)  # channels first
    back = enc.decode(x)
    assert isinstance(back, Images) and back.names == ["sample_000", "sample_001"]
    assert all(b.dtype == np.uint8 for b in back.arrays)
    assert np.array_equal(back.arrays[0], a) and np.array_equal(back.arrays[1], 255 - a)
    x2, _ = enc.encode(back)
    assert torch.equal(x, x2)


def test_from_tensor_rounds_clips_and_survives_nan():
    x = torch.tensor([-3.0, -1.0, -1 + 0.6 / 127.5, 0.0, 1.0, 7.0, float("nan")]).reshape(1, 1, 7)
    assert from_tensor(x)[..., 0].tolist() == [[0, 0, 1, 128, 255, 255, 0]]
    # a small error of a decoded sample stays on its level
    a = every_level(3)
    noisy = to_tensor(a) + (torch.rand(3, 16, 16) - 0.5) * (0.98 / 127.5)
    assert np.array_equal(from_tensor(noisy), a)


def test_metadata_round_trip():
    enc = ImageEncoder(image_size=32, channels=3, resize="stretch", classes=["cat", "dog"])
    meta = json.loads(json.dumps(enc.metadata()))
    again = ImageEncoder.from_metadata(meta)
    assert again.metadata() == enc.metadata() == {"image_size": 32, "channels": 3, "resize": "stretch",
                                                  "classes": ["cat", "dog"]}
    a = every_level(3)
    assert torch.equal(enc.encode([a])[0], again.encode([a])[0])
    assert ImageEncoder.from_metadata(None).metadata()["image_size"] is None
    with pytest.raises(InputError, match="the image encoder is not fitted"):
        ImageEncoder().sample_shape()
    with pytest.raises(InputError, match="resize policy must be one of crop, stretch, error, got 'squash'"):
        ImageEncoder(resize="squash")


def test_fit_on_a_folder_with_class_sub_folders(tmp_path, helpers):
    rng = np.random.default_rng(0)
    for cls, n in [("zebra", 2), ("ant", 3)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            helpers.save(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    helpers.save(tmp_path / "ant" / "odd.png", rng.integers(0, 256, (30, 24), dtype=np.uint8))  # another size
    imgs = ImageEncoder().read(tmp_path)
    assert imgs.classes == ["ant", "zebra"] and imgs.labels == [0, 0, 0, 0, 1, 1]
    assert imgs.names[:2] == ["ant/0.png", "ant/1.png"]
    enc = ImageEncoder().fit(imgs)
    assert enc.image_size == 20 and enc.channels == 1 and enc.classes == ["ant", "zebra"]  # the common size
    x, cond = enc.encode(imgs)
    assert x.shape == (6, 1, 20, 20) and cond["label"].tolist() == [0, 0, 0, 0, 1, 1]
    assert configure({"network": {"channels": [8]}}, enc)["network"] == {
        "channels": [8], "image_size": 20, "image_channels": 1, "num_classes": 2}


def test_fit_without_classes_and_explicit_settings(tmp_path, helpers):
    rng = np.random.default_rng(1)
    (tmp_path / "only").mkdir()  # one sub-folder is not a class split
    for i in range(2):
        helpers.save(tmp_path / "only" / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    imgs = ImageEncoder().read(tmp_path)
    assert imgs.labels is None and imgs.classes == []
    enc = ImageEncoder().fit(imgs)
    assert enc.channels == 3 and enc.classes == [] and "label" not in enc.encode(imgs)[1]
    # set sizes win over the data's
    enc = ImageEncoder(image_size=4, channels=1).fit([np.zeros((8, 8, 1), np.uint8)])
    assert enc.sample_shape() == (1, 4, 4)
    # images given as labelled numbers: classes 0..max
    enc = ImageEncoder().fit(Images([np.zeros((4, 4, 1), np.uint8)] * 2, labels=[0, 4]))
    assert enc.classes == ["0", "1", "2", "3", "4"]
    with pytest.raises(InputError, match="need at least one image"):
        ImageEncoder().fit(Images([]))


def test_fit_channels_gray_looking_rgb_is_gray():
    gray_rgb = np.repeat(every_level(1), 3, axis=2)
    assert ImageEncoder().fit([gray_rgb, gray_rgb]).channels == 1
    assert ImageEncoder().fit([gray_rgb, every_level(3)]).channels == 3
    assert ImageEncoder().fit([every_level(1)]).channels == 1


def test_channel_matching(tmp_path, helpers):
    gray, colour = every_level(1), every_level(3)
    rgb_model = ImageEncoder(image_size=16, channels=3)
    x, _ = rgb_model.encode([gray])
    assert x.shape == (1, 3, 16, 16) and torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
    assert torch.equal(x[0, 0], to_tensor(gray)[0])
    gray_model = ImageEncoder(image_size=16, channels=1)
    x, _ = gray_model.encode([np.repeat(gray, 3, axis=2)])
    assert x.shape == (1, 1, 16, 16) and torch.equal(x[0], to_tensor(gray))
    p = helpers.save(tmp_path / "colourful.png", colour)
    with pytest.raises(InputError) as e:
        gray_model.encode(gray_model.read(p))
    assert str(e.value).startswith("colourful.png: a colour (RGB) image, but the model takes grayscale")
    with pytest.raises(InputError, match="has 2 channels; the model takes 3"):
        rgb_model.match_channels(np.zeros((16, 16, 2), np.uint8), "two.png")


def stripes():
    """20 x 40: a red left quarter, a green middle half, a blue right quarter."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10, 0] = 255
    a[:, 10:30, 1] = 255
    a[:, 30:, 2] = 255
    return a


def test_resize_policies():
    a = stripes()
    crop = resize_array(a, 10, "crop")
    assert crop.shape == (10, 10, 3)
    # only the green middle is left (Lanczos rings a little at the cut)
    assert crop[:, :, 1].min() >= 230 and crop[:, :, [0, 2]].max() <= 25
    stretch = resize_array(a, 10, "stretch")
    assert stretch.shape == (10, 10, 3)
    assert stretch[:, 0, 0].min() >= 230 and stretch[:, 5, 1].min() >= 230 and stretch[:, -1, 2].min() >= 230
    assert stretch[:, 0, 1:].max() <= 25 and stretch[:, -1, :2].max() <= 25
    tall = resize_array(np.ascontiguousarray(a.transpose(1, 0, 2)), 10, "crop")  # 40 x 20 -> the middle rows
    assert tall.shape == (10, 10, 3) and tall[:, :, 1].min() >= 230 and tall[:, :, [0, 2]].max() <= 25
    g = resize_array(a[:, :, :1], 5, "crop")
    assert g.shape == (5, 5, 1) and g.dtype == np.uint8
    square = np.ascontiguousarray(a[:, :20])
    assert resize_array(square, 20, "error") is square  # the model's size: untouched, whatever the policy
    with pytest.raises(InputError) as e:
        resize_array(a, 10, "error", name="wide.png")
    assert str(e.value).startswith("wide.png: is 40x20 pixels; the model takes 10x10 images")


def test_the_encoder_applies_its_resize_policy():
    a = stripes()
    for policy in ("crop", "stretch"):
        enc = ImageEncoder(image_size=10, channels=3, resize=policy)
        x, _ = enc.encode(Images([a], names=["wide.png"]))
        assert x.shape == (1, 3, 10, 10) and np.array_equal(from_tensor(x[0]), resize_array(a, 10, policy))
    enc = ImageEncoder(image_size=10, channels=3, resize="error")
    with pytest.raises(InputError, match=r"^wide\.png: is 40x20 pixels"):
        enc.encode(Images([a], names=["wide.png"]))
    assert enc.prepare(a, "wide.png", resize="crop").shape == (10, 10, 3)  # a policy given for one call


def test_labels_are_mapped_by_class_name():
    enc = ImageEncoder(image_size=4, channels=1, classes=["a", "b", "c"])
    z = np.zeros((4, 4, 1), np.uint8)
    imgs = Images([z] * 4, labels=[0, 1, 2, -1], classes=["c", "a", "zzz"])
    assert enc.encode(imgs)[1]["label"].tolist() == [2, 0, -1, -1]  # unknown names and -1: no label
    assert "label" not in ImageEncoder(image_size=4, channels=1).encode(imgs)[1]  # an unconditional model
    back = enc.decode(torch.zeros(2, 1, 4, 4), {"label": torch.tensor([2, 0])})
    assert back.labels == [2, 0] and back.classes == ["a", "b", "c"]
    with pytest.raises(InputError, match="no images to encode"):
        enc.encode(Images([]))


def test_make_cond_labels():
    enc = ImageEncoder(image_size=4, channels=1, classes=datasets.CIFAR10_CLASSES)
    assert make_cond(enc, 12)["label"].tolist() == list(range(10)) + [0, 1]
    assert make_cond(enc, 3, label="all")["label"].tolist() == [0, 1, 2]
    assert make_cond(enc, 2, label="cat")["label"].tolist() == [3, 3]
    assert make_cond(enc, 2, label="9")["label"].tolist() == [9, 9]
    assert make_cond(enc, 2, label="none")["label"].tolist() == [-1, -1]
    for bad in ["10", "-1", "kitten"]:
        with pytest.raises(InputError, match=r"^label .* is not one of this model's classes \(airplane, "):
            make_cond(enc, 2, label=bad)
    plain = ImageEncoder(image_size=4, channels=1)
    assert make_cond(plain, 3) == {} and make_cond(plain, 3, label="none") == {}
    with pytest.raises(InputError, match="trained without labels"):
        make_cond(plain, 2, label="3")


def test_array_inputs_of_the_encoder():
    enc = ImageEncoder(image_size=6, channels=1)
    x, _ = enc.encode(np.zeros((2, 6, 6), np.uint8))  # [N, H, W]
    assert x.shape == (2, 1, 6, 6) and (x == -1).all()
    x, _ = enc.encode(np.ones((3, 6, 6, 1), np.float32))  # floats in [0, 1]
    assert x.shape == (3, 1, 6, 6) and (x == 1).all()
    x, _ = enc.encode([np.full((6, 6), 255, np.uint8)])  # a list of [H, W]
    assert x.shape == (1, 1, 6, 6) and (x == 1).all()
    with pytest.raises(InputError, match="transparent"):
        enc.encode([np.zeros((6, 6, 4), np.uint8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bundled sample reads without a warning
        sample = datasets.mnist_sample()
    assert len(sample) == 100 and sample.arrays[0].shape == (28, 28, 1)
    assert sorted(sample.labels) == sorted(list(range(10)) * 10) and sample.classes == datasets.MNIST_CLASSES
