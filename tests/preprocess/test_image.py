"""preprocess.image: every kind of input ImageNet holds, and the fidelity of the fast path."""

from __future__ import annotations


import numpy as np
import pytest
from oddfiles import jpeg_bytes, odd_files, png_bomb

from preprocess import democorpus, image


@pytest.fixture(scope="module")
def photo():
    return democorpus.load_photo(4)[1]  # 872 x 1000: big enough for the DCT-scaled path


@pytest.fixture(scope="module")
def files(photo):
    return odd_files(photo)


@pytest.fixture(scope="module")
def expected(photo):
    """The photo itself through the float64 reference path."""
    return image.resize_crop(photo.astype(np.float64), photo.shape[:2])


def test_each_kind_of_file_is_converted_or_rejected_with_its_reason(files):
    for name, (data, want) in files.items():
        try:
            pixels = image.prepare(data)
        except image.Rejected as r:
            assert r.reason == want, f"{name}: rejected as {r.reason} ({r.detail}), expected {want}"
            continue
        assert want == "ok", f"{name}: converted, expected rejection {want}"
        assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8, name


@pytest.mark.parametrize("name", ["plain.JPEG", "cmyk.JPEG", "ycck.JPEG", "png_named.JPEG", "rgb16.png",
                                  "bitmap.bmp", "palette.png", "no_extension"])
def test_colour_inputs_keep_the_photos_colours(files, expected, name):
    pixels = image.prepare(files[name][0])
    assert image.psnr(pixels, expected) > 28, name  # lossy sources, right colours (inverted CMYK: ~5 dB)


@pytest.mark.parametrize("name", ["gray.JPEG", "gray.png", "gray16.png"])
def test_gray_inputs_become_gray_rgb(files, expected, name):
    pixels = image.prepare(files[name][0]).astype(np.float64)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert abs(pixels.mean() - expected.mean()) < 3, name


def test_alpha_is_flattened_onto_white(files, expected):
    pixels = image.prepare(files["rgba.png"][0]).astype(np.float64)
    want = expected * (200 / 255) + 255 * (55 / 255)  # alpha 200 over white
    assert np.abs(pixels - want).mean() < 3


def test_bomb_guard_follows_max_pixels(files):
    small = jpeg_bytes(np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(image.Rejected) as r:
        image.prepare(small, max_pixels=300 * 300 - 1)
    assert r.value.reason == "too_large"
    assert image.prepare(small, max_pixels=300 * 300).shape == (256, 256, 3)
    with pytest.raises(image.Rejected):
        image.prepare(png_bomb(20_000, 20_000), max_pixels=10**8)


def test_geometry_short_side_256_center_crop():
    # A wide image with a marked center column: the crop must keep it in the middle.
    wide = np.zeros((512, 1536, 3), np.uint8)
    wide[:, 766:770] = 255
    out = image.resize_crop(wide, wide.shape[:2])
    assert out.shape == (256, 256, 3)
    bright = np.nonzero(out[128, :, 0] > 100)[0]
    assert 126 <= bright.min() and bright.max() <= 129
    assert image.target_shape(300, 450) == (256, 384)
    assert image.target_shape(450, 300) == (384, 256)
    # Small images are enlarged to 256, not refused.
    assert image.prepare(jpeg_bytes(np.full((120, 90, 3), 7, np.uint8))).shape == (256, 256, 3)


@pytest.fixture(scope="module")
def real_photo_jpegs(demo_corpus):
    """The demo corpus's JPEGs and every package photo at 1x, 1.6x and 2.3x (short side <= 2000)."""
    from PIL import Image

    found = [p.read_bytes() for p in sorted(demo_corpus.rglob("*.JPEG"))[::4]]
    for c in range(len(democorpus.PHOTOS)):
        photo = democorpus.load_photo(c)[1]
        for s in (1.0, 1.6, 2.3):
            h, w = photo.shape[:2]
            if min(h, w) * s <= 2000:
                big = photo if s == 1 else np.asarray(Image.fromarray(photo).resize((round(w * s), round(h * s)), Image.LANCZOS))
                found.append(jpeg_bytes(big))
    return found


def _worst_psnr(jpegs) -> float:
    return min(image.psnr(image.prepare(data), image.reference(data)) for data in jpegs)


def test_fidelity_fast_path_against_float64_reference(real_photo_jpegs):
    worst = _worst_psnr(real_photo_jpegs)
    assert worst >= 38.0, f"worst PSNR {worst:.1f} dB"


def test_fidelity_check_can_fail(real_photo_jpegs, monkeypatch):
    # DCT scaling below the target size is what the margin avoids: the same check must
    # catch it, so the test above has teeth.
    monkeypatch.setattr(image, "DCT_MARGIN", 0.75)
    assert _worst_psnr(real_photo_jpegs) < 38.0


@pytest.mark.parametrize("shape", [(200, 356), (356, 200), (230, 420)])
def test_resize_when_the_crop_edge_meets_the_input_edge(shape):
    # For 200 x 356 the crop's far column is column 356 of the 256 x 456 resize: as many
    # columns as the input has, where torch would return the input unscaled.
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    smooth = np.stack([128 + 60 * np.sin(xx / 9.0) + 30 * np.cos(yy / 7.0)] * 3, axis=-1)
    import torch

    fast = image.resize_crop(smooth.astype(np.uint8), shape)
    th, tw = image.target_shape(*shape)
    full = torch.nn.functional.interpolate(torch.from_numpy(smooth).permute(2, 0, 1)[None], size=(th, tw),
                                           mode="bicubic", antialias=True)[0].permute(1, 2, 0).numpy()
    top, left = (th - 256) // 2, (tw - 256) // 2
    assert image.psnr(fast, full[top : top + 256, left : left + 256]) > 45


def test_fidelity_of_the_pillow_path_for_large_cmyk_and_ycck():
    from oddfiles import adobe_cmyk
    import simplejpeg
    from PIL import Image
    import io

    photo = democorpus.load_photo(6)[1]  # 1411 x 1411: Pillow's draft decodes at 1/2
    buf = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(buf, "JPEG", quality=95)
    for data in (buf.getvalue(), simplejpeg.encode_jpeg(adobe_cmyk(photo), 95, "CMYK")):
        pixels, _, scale = image.decode(data)
        assert scale == 0.5 and pixels.shape == (706, 706, 3)
        assert image.psnr(image.prepare(data), image.reference(data)) >= 38.0
