"""An up-to-date -o measured after --resize/--center-crop is decided without importing torch, and
the measuring transform is described the same way with torch or without it."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

import prep
from helpers import good_images, run
from prep.transforms.measurement import (
    MeasurementTransform,
    describe_transform,
    measurement_spec,
    measurement_transform,
)

SIZES = [
    (256, None),
    ("224x192", None),
    ([5], None),
    (None, 224),
    (None, "200x100"),
    (None, [7]),
    (256, 224),
    ("300,200", "64x32"),
    ("9", "3x3"),
]

_REUSE = """
import sys
from prep.cli import main
main(sys.argv[1:], standalone_mode=False)
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


@pytest.mark.parametrize("resize, center_crop", SIZES)
def test_the_description_without_torch_is_torchvisions_repr(resize, center_crop):
    built = measurement_transform(resize, center_crop)
    spec = MeasurementTransform(resize, center_crop)
    assert describe_transform(spec) == " ".join(repr(built).split())  # what files made before recorded
    assert describe_transform(built) == describe_transform(spec)
    image = torch.randint(0, 256, (3, 300, 280), dtype=torch.uint8)
    assert torch.equal(spec(image), built(image))  # calling the spec applies the transform
    copy = pickle.loads(pickle.dumps(spec))  # what workers get: the sizes, built there
    assert copy._built is None and torch.equal(copy(image), built(image))


def test_the_spec_checks_sizes_as_the_transform_does():
    assert measurement_spec(None, None) is None
    with pytest.raises(prep.OptionError, match=r"resize \(--resize\) must be a size N or HxW"):
        measurement_spec("big", None)
    with pytest.raises(prep.OptionError, match=r"center_crop \(--center-crop\) must be a size"):
        measurement_spec(None, "0x4")


def test_an_up_to_date_resized_output_is_decided_without_importing_torch(tmp_path):
    folder = tmp_path / "photos"
    good_images(folder, 6)
    out = tmp_path / "s.json"
    args = ["stats", str(folder), "-o", str(out), "--resize", "12", "--center-crop", "10x8", "--workers", "0"]
    first = run(*args)
    assert first.exit_code == 0 and "wrote" in first.stderr
    again = subprocess.run([sys.executable, "-c", _REUSE, *args], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "is up to date" in again.stdout and "torch not imported" in again.stdout
    assert "measured after        Compose( Resize(size=[12]" in again.stdout
    other = subprocess.run(
        [sys.executable, "-c", _REUSE, *args[:-4], "--center-crop", "10", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0 and "transform changed" in other.stderr and "torch imported" in other.stdout


def test_files_of_the_api_and_the_command_line_reuse_each_other(tmp_path):
    folder = tmp_path / "photos"
    good_images(folder, 5)
    out = tmp_path / "s.json"
    stats, reused = prep.load_or_compute(out, folder, transform=measurement_transform(14, 12), workers=0)
    assert not reused and stats.transform == describe_transform(MeasurementTransform(14, 12))
    again = run("stats", folder, "-o", out, "--resize", "14", "--center-crop", "12", "--workers", 0)
    assert again.exit_code == 0 and "is up to date" in again.stdout
    _, reused = prep.load_or_compute(out, folder, transform=measurement_spec(14, 12), workers=0)
    assert reused
