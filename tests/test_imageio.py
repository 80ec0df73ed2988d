"""Image I/O on real-world files, and one test per bad input the CLI must survive."""
import numpy as np
import pytest
import torch
from PIL import Image

from wmkit.errors import InputError
from wmkit.imageio import load_image, save_image


def _photo(h=64, w=96):
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "bmp", "tif"])
def test_formats(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    Image.fromarray(_photo()).save(path)
    img = load_image(path)
    assert img.shape == (3, 64, 96) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0


def test_modes_are_converted_explicitly(tmp_path):
    gray = Image.fromarray(_photo()[..., 0])
    gray.save(tmp_path / "l.png")
    img = load_image(tmp_path / "l.png")
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])

    rgba = np.concatenate([_photo(), np.zeros((64, 96, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.allclose(load_image(tmp_path / "rgba.png"), torch.ones(3, 64, 96))  # composited on white

    Image.fromarray(_photo()).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (3, 64, 96)

    sixteen = (np.linspace(0, 65535, 64 * 96).reshape(64, 96)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    img16 = load_image(tmp_path / "16.png")
    assert float(img16.max()) == pytest.approx(1.0) and float(img16.min()) == 0.0


def test_exif_orientation_is_honoured(tmp_path):
    im = Image.fromarray(_photo(40, 80))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when viewed
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").shape == (3, 80, 40)


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(InputError, match="x.png: not an image"):
        load_image(tmp_path / "x.png")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(InputError, match="e.png: empty file"):
        load_image(tmp_path / "e.png")


def test_truncated_file(tmp_path):
    Image.fromarray(_photo(256, 256)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.png: truncated"):
        load_image(tmp_path / "t.png")


def test_too_small_says_the_minimum(tmp_path):
    Image.fromarray(_photo(100, 100)).save(tmp_path / "s.png")
    with pytest.raises(InputError, match=r"s.png: 100x100 is smaller than the method's minimum of 65536 pixels \(e.g. 256x256\)"):
        load_image(tmp_path / "s.png", min_pixels=256 * 256)


def test_too_large_is_refused_before_decoding(tmp_path):
    # a 20000 x 20000 PNG header on a tiny file: must be refused from the header, without allocating
    Image.new("L", (20000, 20000)).save(tmp_path / "big.png", optimize=False)
    with pytest.raises(InputError, match="big.png: 20000x20000 is larger than the limit"):
        load_image(tmp_path / "big.png", max_pixels=10_000_000)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_save_refuses_to_overwrite_input_and_existing(tmp_path):
    img = torch.rand(3, 32, 32)
    src = save_image(img, tmp_path / "a.png")
    with pytest.raises(InputError, match="would overwrite its input"):
        save_image(img, src, protect=[src])
    with pytest.raises(InputError, match="exists"):
        save_image(img, src)
    save_image(img, src, overwrite=True)  # allowed when asked


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        save_image(torch.rand(3, 8, 8), blocker / "out.png")
