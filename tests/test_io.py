"""Image reading (MST++ preprocessing), batching by size, and cube writing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mstpp.errors import ImageError
from mstpp.io import batches_by_size, cube_to_srgb, find_images, read_rgb, write_cube


def test_reads_bgr_file_as_rgb_minmax(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[0, 0] = (10, 20, 30)
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    x = read_rgb(tmp_path / "a.png")
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert x[0, 1, 1] == 1.0 and x[1, 1, 1] == 0.0  # red channel first
    expected = (np.array([10, 20, 30]) - 0) / 200.0
    assert np.allclose(x[:, 0, 0], expected)


def test_16bit_png_keeps_depth(tmp_path):
    img = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 3000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), img)
    x = read_rgb(tmp_path / "deep.png")
    assert len(np.unique(x)) == 18  # 8-bit truncation would merge levels


def test_npy_in_both_layouts(tmp_path):
    hwc = np.random.rand(6, 7, 3).astype(np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", hwc.transpose(2, 0, 1))
    assert np.allclose(read_rgb(tmp_path / "hwc.npy"), read_rgb(tmp_path / "chw.npy"))


def test_real_arad_image(arad_image):
    x = read_rgb(arad_image)
    assert x.shape == (3, 482, 512) and x.min() == 0 and x.max() == 1


@pytest.mark.parametrize("maker,message", [
    (lambda p: None, "image not found"),
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg"), "cannot be decoded"),
    (lambda p: cv2.imwrite(str(p), np.full((4, 4), 7, np.uint8)), "grayscale"),
    (lambda p: cv2.imwrite(str(p), np.full((4, 4, 3), 7, np.uint8)), "constant"),
])
def test_bad_images(tmp_path, maker, message):
    path = tmp_path / "img.jpg" if "decoded" in message else tmp_path / "img.png"
    maker(path)
    with pytest.raises(ImageError, match=message):
        read_rgb(path)


def test_unsupported_suffix_and_bad_array(tmp_path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageError, match="unsupported file type"):
        read_rgb(tmp_path / "a.gif")
    np.save(tmp_path / "b.npy", np.zeros((4, 4)))
    with pytest.raises(ImageError, match="not an RGB image"):
        read_rgb(tmp_path / "b.npy")


def test_batches_group_by_size():
    imgs = [np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 16), np.float32), np.ones((3, 8, 8), np.float32)]
    groups = batches_by_size(imgs, max_batch=4)
    assert sorted(tuple(idx) for idx, _ in groups) == [(0, 2), (1,)]
    for idx, batch in groups:
        assert batch.shape[0] == len(idx)


def test_find_images(tmp_path):
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_images([tmp_path])] == ["a.jpg", "b.png"]
    with pytest.raises(ImageError):
        find_images([tmp_path / "missing"])


def test_write_cube(tmp_path):
    cube = np.random.rand(31, 10, 12).astype(np.float32)
    paths = write_cube(cube, tmp_path / "out" / "scene")
    names = sorted(p.name for p in paths)
    assert "scene.npy" in names and "scene_preview.png" in names
    assert np.array_equal(np.load(tmp_path / "out" / "scene.npy"), cube)
    preview = cv2.imread(str(tmp_path / "out" / "scene_preview.png"))
    assert preview.shape == (10, 12 * 4, 3)


def test_false_colour_of_a_flat_spectrum_is_grey():
    srgb = cube_to_srgb(np.ones((31, 2, 2), np.float32))
    r, g, b = srgb[0, 0].astype(int)
    assert max(r, g, b) - min(r, g, b) < 40  # equal-energy white is near-neutral in sRGB
