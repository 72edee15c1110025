"""NIfTI volumes for the tests: CT-like and MRI-like cases, label maps, nnU-Net's raw layout, a
MONAI datalist, and damaged or hostile files.

nibabel writes the files (``.nii.gz`` through its own gzip), with the header's ``scl_slope`` /
``scl_inter`` set explicitly where a test needs them. A CT-like case is int16 Hounsfield units:
air -1024 around a body of soft tissue (about 40 HU, noisy), two organs and bone (700 to 1900);
its label map holds background 0, organs 1 and 2 and an ignore label 3 over a band of the body.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np

try:
    import nibabel as nib
except ImportError:  # the medical extra is absent: the modules that use these skip (importorskip)
    nib = None

AIR = -1024
IGNORE = 3


def ct_case(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hu int16 (X, Y, Z), labels uint8 (X, Y, Z))`` of a CT-like volume."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = x**2 + y**2 < 0.7
    hu = np.full(shape, AIR, np.int32)
    hu[body] = rng.normal(40, 30, body.sum()).round()
    organ1 = (x - 0.2) ** 2 + y**2 + z**2 < 0.12
    organ2 = (x + 0.3) ** 2 + (y - 0.1) ** 2 < 0.05
    bone = (np.abs(x) < 0.08) & (y > 0.4) & body
    hu[organ1] = rng.normal(60 + seed, 12, organ1.sum()).round()
    hu[organ2] = rng.normal(-80, 20, organ2.sum()).round()
    hu[bone] = rng.integers(700, 1900, bone.sum())
    labels = np.zeros(shape, np.uint8)
    labels[organ1] = 1
    labels[organ2 & ~organ1] = 2
    labels[body & (np.abs(z) > 0.85) & ~organ1 & ~organ2] = IGNORE
    return hu.astype(np.int16), labels


def mri_case(shape: tuple[int, int, int], seed: int, channels: int = 2) -> np.ndarray:
    """A float32 MRI-like volume ``(X, Y, Z, C)``: zero background, positive brain intensities."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = x**2 + y**2 + z**2 < 0.6
    out = np.zeros((*shape, channels), np.float32)
    for c in range(channels):
        out[..., c][brain] = rng.gamma(4.0 + c, 100.0, brain.sum()).astype(np.float32)
    return out


def write_nifti(
    path: Path,
    data: np.ndarray,
    slope: float | None = None,
    inter: float | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``data`` (stored as its own dtype) to ``path``; ``slope``/``inter`` go in the header."""
    affine = np.eye(4) if affine is None else affine
    if slope is not None:
        _write_raw_scaled(path, data, slope, inter or 0.0, affine)
        return path
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _write_raw_scaled(path: Path, raw: np.ndarray, slope: float, inter: float, affine: np.ndarray) -> None:
    """Store ``raw`` as it is with ``scl_slope``/``scl_inter`` in the header (nibabel would rescale
    the data on save; a scanner's file holds the raw values and the scaling)."""
    header = nib.Nifti1Header()
    header.set_data_shape(raw.shape)
    header.set_data_dtype(raw.dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["scl_slope"] = slope
    header["scl_inter"] = inter
    header["vox_offset"] = 352
    body = header.binaryblock + b"\0" * 4 + np.asarray(raw).tobytes(order="F")
    _write_bytes(path, body)


def _write_bytes(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(body, 6))
    else:
        path.write_bytes(body)


def raw_file(
    path: Path,
    shape: tuple[int, ...],
    dtype: str = "<i2",
    data: bytes | None = None,
    extra: int = 0,
) -> Path:
    """A NIfTI-1 file whose header declares ``shape`` of ``dtype`` followed by ``data`` (default:
    zeros for what the header declares), plus ``extra`` zero bytes (a bomb's padding)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype))
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    header["dim"] = dims
    header["vox_offset"] = 352
    if data is None:
        data = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    _write_bytes(path, header.binaryblock + b"\0" * 4 + data + bytes(extra))
    return path


def truncated_gz(path: Path, source: Path, keep: float = 0.5) -> Path:
    """``source`` (a .nii.gz) cut to ``keep`` of its bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def ct_dataset(root: Path, cases: int = 4, shape: tuple[int, int, int] = (24, 20, 18), scaled: bool = False) -> dict:
    """nnU-Net's raw layout under ``root``: ``imagesTr/ct_XXX_0000.nii.gz``, ``labelsTr/ct_XXX.nii.gz``
    and ``dataset.json``; returns ``{case: (hu, labels)}``. With ``scaled`` the images are stored
    as uint16 ``hu + 1024`` with ``scl_inter -1024`` (as DICOM converters write CT)."""
    out = {}
    for k in range(cases):
        name = f"ct_{k:03d}"
        dims = (shape[0] + k, shape[1], shape[2] + 2 * k)  # cases differ in shape
        hu, labels = ct_case(dims, seed=k)
        image = root / "imagesTr" / f"{name}_0000.nii.gz"
        if scaled:
            write_nifti(image, (hu.astype(np.int32) - AIR).astype(np.uint16), slope=1.0, inter=float(AIR))
        else:
            write_nifti(image, hu)
        write_nifti(root / "labelsTr" / f"{name}.nii.gz", labels)
        out[name] = (hu, labels)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "organ1": 1, "organ2": 2, "ignore": IGNORE},
                "numTraining": cases,
                "file_ending": ".nii.gz",
            }
        )
    )
    return out


def header_with_dims(path: Path, dims: tuple[int, ...]) -> Path:
    """A gzip-compressed header alone declaring ``dims`` of int16 (absurd dimensions)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    raw = bytearray(header.binaryblock)
    values = [len(dims), *dims] + [1] * (7 - len(dims))
    struct.pack_into("<8h", raw, 40, *values)
    _write_bytes(path, bytes(raw) + b"\0" * 4)
    return path
