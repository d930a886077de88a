"""Every kind of file a user may drop in a folder: odd modes become RGB, bad files fail with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistrain.data.images import UnreadableImage, load_rgb


def gradient(width: int = 40, height: int = 30) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return np.stack([np.tile(x, (height, 1))] * 3, axis=2)


@pytest.mark.parametrize(
    "mode, suffix",
    [("L", ".png"), ("LA", ".png"), ("P", ".gif"), ("RGBA", ".png"), ("CMYK", ".jpg"), ("RGB", ".webp"),
     ("RGB", ".tiff"), ("RGB", ".bmp"), ("1", ".png"), ("I;16", ".png")],
)
def test_every_mode_becomes_8bit_rgb_of_the_same_size(tmp_path: Path, mode: str, suffix: str):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(gradient()).convert(mode).save(path)
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_16bit_grey_is_scaled_not_clipped(tmp_path: Path):
    pixels = np.full((10, 10), 32768, dtype=np.uint16)  # mid grey in 16-bit
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    assert abs(int(np.asarray(load_rgb(tmp_path / "deep.png"))[0, 0, 0]) - 128) <= 1


def test_transparent_pixels_become_white(tmp_path: Path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)  # black, fully transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_rgb(tmp_path / "clear.png")).min() == 255


def test_cmyk_jpeg_keeps_its_colour(tmp_path: Path):
    Image.new("RGB", (8, 8), (200, 30, 30)).convert("CMYK").save(tmp_path / "print.jpg")
    red, green, blue = np.asarray(load_rgb(tmp_path / "print.jpg"))[4, 4].astype(int)
    assert red > 150 and green < 80 and blue < 80


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (20, 60)


def test_content_decides_not_the_extension(tmp_path: Path):
    Image.fromarray(gradient()).save(tmp_path / "actually-png.jpg", format="PNG")
    assert load_rgb(tmp_path / "actually-png.jpg").size == (40, 30)


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(gradient(200, 200)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:300])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am text"), "not an image"),
        (truncated_jpeg, "cannot decode"),
    ],
    ids=["zero-bytes", "text-named-jpg", "truncated-jpeg"],
)
def test_bad_files_raise_with_a_reason(tmp_path: Path, make, reason: str):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(UnreadableImage, match=reason):
        load_rgb(path)


def test_images_over_the_pixel_limit_are_refused(tmp_path: Path):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(UnreadableImage, match="over the limit"):
        load_rgb(tmp_path / "big.png", max_pixels=5_000)


def photo(width: int = 333, height: int = 251) -> Image.Image:
    """A photo-like picture (smooth colours and noise), of odd size, so that chroma subsampling has work to do."""
    rng = np.random.default_rng(width * height)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(smooth) + rng.integers(-20, 20, (height, width, 3)), 0, 255)
                           .astype(np.uint8))


JPEGS = {  # name -> how it is saved
    "4:2:0": dict(quality=85), "4:4:4": dict(quality=95, subsampling=0), "4:2:2": dict(quality=75, subsampling=1),
    "progressive": dict(quality=80, progressive=True), "optimized": dict(quality=70, optimize=True),
    "restart markers": dict(quality=90, restart_marker_blocks=4),
}


@pytest.mark.parametrize("name", JPEGS)
def test_plain_jpegs_are_decoded_straight_into_arrays_as_pillow_decodes_them(name: str, tmp_path: Path, monkeypatch):
    from vistrain.data import images

    path = tmp_path / "photo.jpg"
    photo().save(path, **JPEGS[name])
    decoded = []
    decode_jpeg = images.simplejpeg.decode_jpeg
    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", lambda *a, **k: decoded.append(1) or decode_jpeg(*a, **k))
    pixels, size = images.load_pixels(path, reduce_to=256)
    assert decoded == [1] and size == (333, 251)  # the fast path, with the same pixels
    np.testing.assert_array_equal(pixels, np.asarray(load_rgb(path, reduce_to=256)))


def test_other_images_give_load_rgb_s_pixels(tmp_path: Path):
    from vistrain.data.images import load_pixels

    cases = {"turned.jpg": dict(exif=_orientation(6)), "grey.jpg": dict(), "cmyk.jpg": dict(), "large.jpg": dict(),
             "photo.png": dict()}
    for name, keywords in cases.items():
        image = photo(2100, 2200) if name == "large.jpg" else photo()
        image = image.convert("L" if name == "grey.jpg" else "CMYK" if name == "cmyk.jpg" else "RGB")
        image.save(tmp_path / name, **keywords)
        pixels, size = load_pixels(tmp_path / name, reduce_to=256)  # the large one reduced to 1,024 px
        expected = load_rgb(tmp_path / name, reduce_to=256)
        np.testing.assert_array_equal(pixels, np.asarray(expected), err_msg=name)
        assert size == expected.info["source_size"], name
    whole = (tmp_path / "photo.jpg")
    photo().save(whole)
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(UnreadableImage, match="truncated"):
        load_pixels(tmp_path / "cut.jpg")
    with pytest.raises(UnreadableImage, match="truncated"):
        load_rgb(tmp_path / "cut.jpg")


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()
