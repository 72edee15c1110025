"""CPU equals CUDA: the same code on both devices gives the same numbers (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import torch

import prep
from conftest import cuda, make_cifar10, make_mnist
from prep.accumulator import ChannelMoments, _uint8_image_sums
from prep.devices import to_device


@cuda
def test_uint8_sums_on_cuda_equal_cpu():
    batch = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    for a, b in zip(_uint8_image_sums(batch.cuda()), _uint8_image_sums(batch)):
        np.testing.assert_array_equal(a, b)


@cuda
def test_named_datasets_on_cuda_equal_cpu(tmp_path):
    make_mnist(tmp_path)
    make_cifar10(tmp_path)
    for name in ("mnist", "cifar10"):
        cpu = prep.compute_stats(name, root=tmp_path, device="cpu")
        gpu = prep.compute_stats(name, root=tmp_path, device="cuda", batch_size=33)
        assert (gpu.mean, gpu.std, gpu.min, gpu.max, gpu.count) == (cpu.mean, cpu.std, cpu.min, cpu.max, cpu.count)


@cuda
def test_float_data_on_cuda_agrees_to_1e12():
    x = torch.rand(16, 3, 20, 20, dtype=torch.float64)
    cpu = ChannelMoments(3).update(x).compute()
    gpu = ChannelMoments(3).update(x.cuda()).compute()
    np.testing.assert_allclose(gpu.mean, cpu.mean, rtol=1e-12)
    np.testing.assert_allclose(gpu.std, cpu.std, rtol=1e-12)


@cuda
def test_transfer_is_pinned_and_lands_on_the_gpu():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 2, 2)
    t = to_device(array, torch.device("cuda"))
    assert t.is_cuda and torch.equal(t.cpu(), torch.from_numpy(array))


@cuda
def test_normalize_pipeline_runs_on_cuda_tensors(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(stats.normalize()(img.cuda()).cpu(), stats.normalize()(img))
