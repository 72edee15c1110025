"""The same torch code on every device: each test runs on the CPU, and on CUDA where there is a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prep
from helpers import exact_stats, make_cifar10, make_mnist
from prep.engine.devices import resolve_device, to_device
from prep.errors import OptionError
from prep.stats.moments import ChannelMoments


def test_named_datasets_on_the_device_are_exact(tmp_path, device):
    data = {"mnist": make_mnist(tmp_path)["train"][:, None], "cifar10": make_cifar10(tmp_path)["train"]}
    for name, images in data.items():
        stats = prep.compute_stats(name, root=tmp_path, device=device, batch_size=33)
        pixels = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1).T
        exact = exact_stats(pixels)
        assert list(stats.mean) == exact["mean"]
        assert list(stats.std) == [float(np.sqrt(v)) for v in exact["var"]]
        assert stats.min == tuple(float(v) / 255 for v in pixels.min(0))


def test_float_data_on_the_device_agrees_with_float64_numpy_to_1e12(device):
    x = torch.rand(16, 3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = ChannelMoments(3).update(x.to(device)).compute()
    ref = x.numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(got.mean, ref.mean(1), rtol=1e-12)
    np.testing.assert_allclose(got.std, ref.std(1), rtol=1e-12)


def test_transfer_lands_on_the_device_with_the_same_values(device):
    batch = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 2, 2)
    moved = to_device(batch, resolve_device(device))
    assert moved.device.type == device and torch.equal(moved.cpu(), batch)


def test_normalize_pipeline_runs_on_device_tensors(tmp_path, device):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    out = stats.normalize()(img.to(device))
    assert out.device.type == device
    expected = (img.double() / 255 - stats.mean[0]) / stats.std[0]
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-6, atol=1e-6)


def test_cuda_without_a_gpu_is_an_option_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(OptionError, match="CUDA is not available"):
        resolve_device("cuda")
