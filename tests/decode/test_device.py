"""prep.decode.device: exact per-image histograms and cross sums of decoded tensors; a damaged
JPEG in a batch is lost alone."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from prep.decode.decoders import PILDecoder, reduced_tensor
from prep.decode.device import decode_on_device, image_cross_sums, image_histograms


def _tensors(device: str):
    rng = np.random.default_rng(5)
    colour = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in ((5, 7), (1, 1), (30, 2))]
    grey = torch.from_numpy(rng.integers(0, 256, (1, 6, 4), dtype=np.uint8))
    colour[0][:, 0, 0] = 255
    return [t.to(device) for t in colour] + [grey.to(device).expand(3, 6, 4)]


def test_image_histograms_count_every_value_of_every_image(device):
    images = _tensors(device)
    hist = image_histograms(images, 3)
    for i, image in enumerate(images):
        x = image.cpu().numpy()
        for c in range(3):
            np.testing.assert_array_equal(hist[i, c], np.bincount(x[c].ravel(), minlength=256))


def test_image_cross_sums_are_exact_integers(device):
    images = _tensors(device)
    for image, cross in zip(images, image_cross_sums(images)):
        x = image.cpu().numpy().reshape(3, -1).astype(np.int64)
        assert cross == (x @ x.T).tolist()


def test_reduced_tensor_equals_pils_histogram_of_the_same_pixels():
    for image in _tensors("cpu"):
        got = reduced_tensor(image, covariance=True)
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        want = PILDecoder(covariance=True)(_png(hwc), "RGB")
        assert got == want


def _png(hwc: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, "PNG")
    buf.seek(0)
    return buf


def test_decode_on_device_loses_only_the_damaged_file(kinds, device):
    good = [kinds["420-1"].read_bytes(), kinds["grey-0"].read_bytes(), kinds["444-2"].read_bytes()]
    datas = [good[0], good[1][:40], good[1], good[2]]
    out = decode_on_device(datas, "RGB", device, covariance=True)
    assert isinstance(out[1], Exception)
    pil = PILDecoder(covariance=True)
    if device == "cpu":  # libjpeg-turbo: PIL's pixels exactly
        for got, data in zip([out[0], out[2], out[3]], good):
            assert got == pil(io.BytesIO(data), "RGB")
    else:
        assert [o.size for o in (out[0], out[2], out[3])] == [pil(io.BytesIO(d), "RGB").size for d in good]
