"""Decoders (--decoder pil|auto|torchvision) and the device decode path, against PIL's pixels.

PIL's ``Image.open(p).convert(mode)`` (torchvision ``ImageFolder``'s loader) is the reference:
``auto`` must give its statistics for every kind of file, ``torchvision`` must for the kinds
where torchvision.io's pixels equal PIL's, and the device path (run here on the CPU, where its
pixels are libjpeg-turbo's) must equal the in-worker path bit for bit.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prep
import prep.decode.decoders
import prep.engine.loop
import prep.engine.measure
import prep.engine.reducers
from helpers import make_mnist, run, write_kinds
from prep.decode.decoders import ImageArray, PILDecoder, TorchvisionDecoder, torchvision_kind
from prep.decode.device import PassJpegs
from prep.errors import MismatchError, OptionError, StatsFileError
from prep.transforms.measurement import measurement_transform


def _decode(decoder, path: Path, mode: str):
    """What ``decoder`` makes of ``path``, comparable with ``==`` (arrays as bytes)."""
    with open(path, "rb") as f:
        out = decoder(f, mode)
    if isinstance(out, ImageArray):
        return ("array", out.array.dtype.str, out.array.shape, out.array.tobytes(), out.pixel_max)
    return out


# ------------------------------------------------------------------ decoders against PIL
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_auto_gives_pils_numbers_for_every_kind(kinds, mode):
    pil, auto = PILDecoder(covariance=True), TorchvisionDecoder(covariance=True, verify=True)
    for name, path in kinds.items():
        assert _decode(auto, path, mode) == _decode(pil, path, mode), name
    verdicts = {kind[:4]: same for (kind, _), same in auto._same_as_pil.items()}
    assert verdicts[("jpeg", 0xC0, 8, 3)] and verdicts[("jpeg", 0xC2, 8, 3)] and verdicts[("jpeg", 0xC0, 8, 1)]
    assert all(kind[0] == "jpeg" for kind in verdicts)  # PNGs always go to PIL


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_torchvision_equals_pil_on_grey_and_colour_jpegs(kinds, mode):
    """libjpeg-turbo in torchvision and in PIL: the same pixels for 4:2:0, 4:2:2, 4:4:4,
    progressive, optimized and grey JPEGs (colour ones in L by PIL's luma, not libjpeg's); every
    PNG (palette ones included: torchvision.io would read their indices) is PIL's."""
    pil, tv = PILDecoder(covariance=True), TorchvisionDecoder(covariance=True, verify=False)
    same = [n for n in kinds if not n.startswith("cmyk")]
    assert len(same) > 50
    for name in same:
        assert _decode(tv, kinds[name], mode) == _decode(pil, kinds[name], mode), name


def test_palette_pngs_are_measured_by_their_colours_under_every_decoder(tmp_path):
    """A palette PNG whose palette is not a grey ramp: its indices are not its pixels."""
    indices = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "P")
    grey_ramp = [v for k in range(256) for v in (k, k, k)]
    colours = [v for k in range(256) for v in (255 - k, 40, 200)]
    for i, palette in enumerate((grey_ramp, colours)):
        img = indices.copy()
        img.putpalette(palette)
        img.save(tmp_path / f"{i}.png")
    stats = {d: prep.compute_stats(tmp_path, decoder=d, workers=0) for d in ("pil", "auto", "torchvision")}
    assert stats["auto"].state == stats["torchvision"].state == stats["pil"].state
    assert stats["pil"].mean[1] == (sum(range(64)) + 40 * 64) / (128 * 255)  # green: the ramp's, then 40


def test_sixteen_bit_and_other_formats_go_to_pil_under_every_decoder(kinds):
    pil, tv = PILDecoder(), TorchvisionDecoder(verify=False)
    for name in ("png-I;16-1", "bmp-1", "gif-1", "tiff-1"):
        assert _decode(tv, kinds[name], "L") == _decode(pil, kinds[name], "L")
    assert _decode(tv, kinds["png-I;16-1"], "L")[-1] == 65535  # still 16-bit values by prep's pixel rule


def test_auto_falls_back_to_pil_for_a_kind_whose_pixels_differ(kinds, monkeypatch):
    real = prep.decode.decoders.torchvision_pixels

    def off_by_one(data, kind, mode, device="cpu"):
        pixels = real(data, kind, mode, device)
        return (pixels.to(torch.int16) + 1).clamp(0, 255).to(torch.uint8) if kind[1] == 0xC2 else pixels

    monkeypatch.setattr(prep.decode.decoders, "torchvision_pixels", off_by_one)
    pil = PILDecoder()
    auto, forced = TorchvisionDecoder(verify=True), TorchvisionDecoder(verify=False)
    progressive = [p for n, p in kinds.items() if n.startswith("progressive-")]
    for path in progressive:
        assert _decode(auto, path, "RGB") == _decode(pil, path, "RGB")
    assert _decode(forced, progressive[1], "RGB") != _decode(pil, progressive[1], "RGB")  # the check mattered
    assert [same for (kind, _), same in auto._same_as_pil.items() if kind[1] == 0xC2] == [False]
    baseline = kinds["420-1"]
    assert _decode(auto, baseline, "RGB") == _decode(pil, baseline, "RGB")
    assert any(same for (kind, _), same in auto._same_as_pil.items() if kind[1] == 0xC0)


def test_a_decoder_sent_to_a_worker_is_that_processs_one_instance():
    """Each task pickles its decoder: the kinds a worker checked stay checked for its next tasks."""
    a = pickle.loads(pickle.dumps(TorchvisionDecoder(covariance=True, verify=True)))
    b = pickle.loads(pickle.dumps(TorchvisionDecoder(covariance=True, verify=True)))
    c = pickle.loads(pickle.dumps(TorchvisionDecoder(covariance=False, verify=True)))
    assert a is b and a is not c and (a.covariance, a.verify) == (True, True)


def _damaged_png() -> bytes:
    """A PNG whose IDAT checksum is wrong: PIL reads it; torchvision 0.29's decode_png crashes."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    at = png.index(b"IDAT")
    png[at + 4 + struct.unpack(">I", png[at - 4 : at])[0]] ^= 1
    return bytes(png)


@pytest.mark.parametrize("workers", [0, 2])
def test_damaged_files_are_read_or_skipped_as_pil_does_under_every_decoder(tmp_path, kinds, monkeypatch, workers):
    folder = tmp_path / "imgs"
    folder.mkdir()
    data = kinds["420-1"].read_bytes()
    (folder / "a-good.jpg").write_bytes(data)
    (folder / "b-cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "c-header-only.jpg").write_bytes(data[:30])
    (folder / "d-good.jpg").write_bytes(kinds["444-1"].read_bytes())
    (folder / "e-bad-crc.png").write_bytes(_damaged_png())
    jfif = data.index(b"JFIF")  # an APP0 segment too short for its JFIF header: PIL refuses the file
    (folder / "f-short-app0.jpg").write_bytes(data[:4] + b"\x00\x08JFIF\x00\x01" + data[jfif + 14 :])
    (folder / "g-good.jpg").write_bytes(kinds["grey-1"].read_bytes())
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cpu", "cuda"}))
    results = {d: prep.compute_stats(folder, decoder=d, workers=workers) for d in ("pil", "auto", "torchvision")}
    results["device"] = prep.compute_stats(folder, decoder="torchvision", device="cpu", workers=workers)
    assert [x["path"] for x in results["pil"].skipped] == ["b-cut.jpg", "c-header-only.jpg", "f-short-app0.jpg"]
    for name, stats in results.items():
        assert stats.skipped == results["pil"].skipped, name  # the same files, reasons and order
        assert stats.state == results["pil"].state, name  # bit for bit, the float fields too
    assert results["pil"].images == 4  # the PNG with the bad checksum is read, as PIL reads it


def test_images_over_pils_pixel_limit_meet_pils_bomb_check_under_every_decoder(kinds, monkeypatch):
    """torchvision.io has no decompression-bomb check: large images go to PIL, which has one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL errors at 2x: 64x48 = 3072 pixels
    tv, device = TorchvisionDecoder(verify=False), PassJpegs()
    for name in ("420-1", "png-RGB-1"):
        for decoder in (tv, device, PILDecoder()):
            with pytest.raises(Image.DecompressionBombError):
                _decode(decoder, kinds[name], "RGB")
    assert torchvision_kind(kinds["420-0"].read_bytes()) is not None  # 37x23: under the limit


# ------------------------------------------------------------------ whole passes
@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed") / "images"
    write_kinds(root / "a", sizes=((37, 23), (16, 16)))
    write_kinds(root / "b", sizes=((23, 41), (8, 9)))
    return root


def _image_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.*") if p.suffix != ".gif")  # GIF: not an ImageFolder extension


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_decoder_gives_pils_statistics_on_a_mixed_folder(mixed_folder, monkeypatch, mode, workers):
    base = prep.compute_stats(mixed_folder, decoder="pil", mode=mode, covariance=True, workers=workers)
    auto = prep.compute_stats(mixed_folder, decoder="auto", mode=mode, covariance=True, workers=workers)
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cpu", "cuda"}))
    device = prep.compute_stats(
        mixed_folder, decoder="torchvision", device="cpu", mode=mode, covariance=True, workers=workers
    )
    assert auto.state == base.state and base.images == _image_files(mixed_folder)
    assert (base.decoder, auto.decoder, device.decoder) == ("pil", "auto", "torchvision")
    # the device path read every grey and colour JPEG itself; CMYK, palettes and transparency are
    # torchvision.io's on the CPU, so compare it with the forced CPU decoder
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cuda"}))
    forced = prep.compute_stats(mixed_folder, decoder="torchvision", device="cpu", mode=mode, covariance=True)
    assert _exact_state(device) == _exact_state(forced)
    np.testing.assert_allclose(device.mean, forced.mean, rtol=1e-12)  # 16-bit PNGs: Chan's float merge
    np.testing.assert_allclose(device.std, forced.std, rtol=1e-12)


def _exact_state(stats) -> dict:
    """The state's exact integer parts (the float mean and m2 beside them depend on the order in
    which chunks were folded: the device path folds a chunk's JPEGs after its other files)."""
    return {k: v for k, v in stats.state.state_dict().items() if k not in ("mean", "m2")}


def test_every_path_routes_each_file_to_its_class(mixed_folder, monkeypatch):
    """8-bit histograms, 16-bit and float images, and the JPEGs the device path decodes after the
    worker: each class's state is that of its folder measured alone."""
    alone = {name: prep.compute_stats(mixed_folder / name, decoder="pil", workers=0) for name in ("a", "b")}
    pil = prep.compute_stats(mixed_folder, decoder="pil", per_class=True, workers=2)
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cpu", "cuda"}))
    device = prep.compute_stats(mixed_folder, decoder="torchvision", device="cpu", per_class=True, workers=2)
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cuda"}))
    forced = prep.compute_stats(mixed_folder, decoder="torchvision", device="cpu", per_class=True, workers=0)
    assert pil.classes == device.classes == forced.classes == ("a", "b")
    for name in ("a", "b"):
        assert _exact_state(pil.class_stats(name)) == _exact_state(alone[name])
        assert _exact_state(device.class_stats(name)) == _exact_state(forced.class_stats(name))
        np.testing.assert_allclose(pil.class_stats(name).mean, alone[name].mean, rtol=1e-12)


def test_device_path_writes_the_same_per_image_rows(mixed_folder, tmp_path, monkeypatch):
    prep.compute_stats(mixed_folder, decoder="torchvision", per_image=tmp_path / "cpu.csv", workers=2)
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cpu", "cuda"}))
    prep.compute_stats(mixed_folder, decoder="torchvision", device="cpu", per_image=tmp_path / "dev.csv", workers=2)
    cpu, dev = (tmp_path / "cpu.csv").read_text(), (tmp_path / "dev.csv").read_text()
    assert cpu == dev and cpu.count("\n") == _image_files(mixed_folder) + 1


# ------------------------------------------------------------------ recorded, reused, refused
def test_the_decoder_is_recorded_and_a_change_of_pixels_recomputes(mixed_folder, tmp_path, caplog):
    out = tmp_path / "s.json"
    first, reused = prep.load_or_compute(out, mixed_folder, decoder="auto")
    assert not reused and json.loads(out.read_text())["options"]["decoder"] == "auto"
    assert prep.load_or_compute(out, mixed_folder, decoder="auto")[1]
    assert prep.load_or_compute(out, mixed_folder, decoder="pil")[1]  # auto gives PIL's pixels: reused
    with caplog.at_level(logging.WARNING, logger="prep"):
        again, reused = prep.load_or_compute(out, mixed_folder, decoder="torchvision")
    assert not reused and "decoder changed (auto -> torchvision)" in caplog.text
    assert prep.load_stats(out).decoder == "torchvision" and again.images == first.images


def test_files_of_earlier_versions_read_as_pil_for_image_files_only(mixed_folder, tmp_path):
    out = tmp_path / "s.json"
    prep.load_or_compute(out, mixed_folder)
    data = json.loads(out.read_text())
    del data["options"]["decoder"]
    out.write_text(json.dumps(data))
    assert prep.load_stats(out).decoder == "pil"
    assert prep.load_or_compute(out, mixed_folder)[1]  # reused: PIL decoded it then, as it does now


def test_an_unknown_decoder_in_a_file_is_refused(mixed_folder, tmp_path):
    out = tmp_path / "s.json"
    prep.load_or_compute(out, mixed_folder)
    data = json.loads(out.read_text())
    data["options"]["decoder"] = "magic"
    out.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=r"options\.decoder"):
        prep.load_stats(out)


def test_merge_refuses_parts_of_other_pixels(mixed_folder):
    a = prep.compute_stats(mixed_folder, shard="0/2", decoder="pil")
    b = prep.compute_stats(mixed_folder, shard="1/2", decoder="torchvision")
    with pytest.raises(MismatchError, match="decoded by torchvision"):
        prep.merge_stats([a, b])
    whole = prep.merge_stats([a, prep.compute_stats(mixed_folder, shard="1/2", decoder="auto")])
    one_pass = prep.compute_stats(mixed_folder)
    assert whole.decoder == "pil" and _exact_state(whole) == _exact_state(one_pass)
    np.testing.assert_allclose(whole.mean, one_pass.mean, rtol=1e-12)  # 16-bit PNGs: Chan's float merge
    assert prep.merge_stats([a, prep.compute_stats(mixed_folder, shard="1/2", decoder="pil")]).decoder == "pil"


def test_decoder_options_that_do_not_apply_are_refused(tmp_path, mixed_folder):
    make_mnist(tmp_path)
    with pytest.raises(OptionError, match=r"decoder torchvision \(--decoder\) is for image files"):
        prep.compute_stats("mnist", root=tmp_path, decoder="torchvision")
    for quiet in (None, "pil", "auto"):  # the default, given or not, changes nothing for arrays
        assert prep.compute_stats("mnist", root=tmp_path, decoder=quiet).decoder is None
    with pytest.raises(OptionError, match="decoder must be one of"):
        prep.compute_stats(mixed_folder, decoder="nvjpeg")
    with pytest.raises(OptionError, match="use decoder pil or auto"):
        prep.compute_stats(mixed_folder, decoder="torchvision", transform=measurement_transform(resize=8))
    resized = prep.compute_stats(mixed_folder, decoder="auto", transform=measurement_transform(resize=8))
    assert resized.decoder == "auto"


def test_only_an_explicit_device_decodes_on_the_device(mixed_folder, monkeypatch):
    """``--device auto`` never changes the pixels: nvjpeg needs ``--device cuda`` said."""
    monkeypatch.setattr(prep.engine.measure, "DEVICE_DECODE", frozenset({"cpu", "cuda"}))
    calls = []
    real = prep.engine.reducers.fold_pending
    monkeypatch.setattr(prep.engine.reducers, "fold_pending", lambda *a, **k: calls.append(1) or real(*a, **k))
    prep.compute_stats(mixed_folder, decoder="torchvision", workers=0)
    assert not calls
    prep.compute_stats(mixed_folder, decoder="torchvision", device="cpu", workers=0)
    assert calls


def test_check_measures_the_data_as_the_reference_was_decoded(mixed_folder, tmp_path):
    ref = prep.compute_stats(mixed_folder, decoder="torchvision")
    result = prep.check_stats(ref, mixed_folder)
    assert result.fingerprint == "matches the file" and result.ok
    assert prep.check_stats(prep.compute_stats(mixed_folder), mixed_folder, decoder="auto").fingerprint == (
        "matches the file"
    )


def test_a_config_files_bad_decoder_names_the_file(tmp_path, mixed_folder):
    config = tmp_path / "c.toml"
    config.write_text('decoder = "nvjpeg"\n')
    result = run("stats", mixed_folder, "--config", config)
    assert result.exit_code == 2 and "c.toml" in result.output and "decoder" in result.output


def test_cli_decoder_choice_and_record(mixed_folder, tmp_path):
    result = run("stats", mixed_folder, "--decoder", "auto", "-o", tmp_path / "s.json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["options"]["decoder"] == "auto"
    bad = run("stats", mixed_folder, "--decoder", "turbo")
    assert bad.exit_code == 2 and "turbo" in bad.output


# ------------------------------------------------------------------ CUDA only
NVJPEG_MEAN_TOL = 2 / 255  # nvjpeg's IDCT and upsampling round differently from libjpeg-turbo


@pytest.mark.cuda
def test_nvjpeg_folder_path_agrees_with_the_cpu_path(mixed_folder):
    cpu = prep.compute_stats(mixed_folder, decoder="pil", device="cpu")
    gpu = prep.compute_stats(mixed_folder, decoder="torchvision", device="cuda")
    assert gpu.decoder == "torchvision-cuda" and gpu.images == cpu.images and gpu.count == cpu.count
    np.testing.assert_allclose(gpu.mean, cpu.mean, atol=NVJPEG_MEAN_TOL)
    np.testing.assert_allclose(gpu.std, cpu.std, atol=NVJPEG_MEAN_TOL)


def test_check_of_arrays_or_resized_images_against_a_torchvision_reference(mixed_folder, tmp_path):
    ref = prep.compute_stats(mixed_folder, decoder="torchvision")
    arrays = tmp_path / "x.npy"
    np.save(arrays, np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    assert prep.check_stats(ref, arrays).fingerprint.startswith("differs")  # measured, not refused
    resized = prep.check_stats(ref, mixed_folder, transform=measurement_transform(resize=8))
    assert "transform changed" in resized.fingerprint


def test_a_checkpoint_of_pil_resumes_under_auto(mixed_folder, tmp_path, monkeypatch):
    checkpoint = tmp_path / "c.ckpt"
    calls = []
    real = prep.engine.loop._Run.advance

    def interrupt(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(prep.engine.loop._Run, "advance", interrupt)
    monkeypatch.setattr(prep.engine.loop, "TASK_FILES", 2)  # several tasks of this small folder
    with pytest.raises(KeyboardInterrupt):
        prep.compute_stats(mixed_folder, decoder="pil", checkpoint=checkpoint, checkpoint_every=1, workers=0)
    assert checkpoint.exists()  # written under pil ...
    monkeypatch.setattr(prep.engine.loop._Run, "advance", real)
    resumed = prep.compute_stats(mixed_folder, decoder="auto", checkpoint=checkpoint, resume=True, workers=0)
    assert _exact_state(resumed) == _exact_state(prep.compute_stats(mixed_folder, decoder="pil"))


def test_whiten_refuses_the_torchvision_decoder_with_a_transform(mixed_folder):
    result = run("whiten", mixed_folder, "--decoder", "torchvision", "--resize", "8x8")
    assert result.exit_code == 2 and "applied to PIL's pixels" in result.output


def test_the_cpu_decoder_is_torchvision_io_s_operator_and_gives_its_public_pixels(monkeypatch):
    """torchvision.io's operator, called without its public wrapper (which warns on every call),
    decodes to the wrapper's pixels; a torchvision whose operator takes other arguments gets the
    public function."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from prep.decode import decoders

    decode = decoders._cpu_jpeg_decoder()
    rng = np.random.default_rng(0)
    for mode in ("L", "RGB", "CMYK"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (17, 9, 3), np.uint8)).convert(mode).save(buf, "JPEG")
        raw = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        read = decoders._READ_RGB if mode == "CMYK" else decoders._READ_UNCHANGED
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no deprecation warning from prep's own call
            got = decode(raw, read)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.equal(got, decode_jpeg(raw, mode=ImageReadMode(read)))
    assert decode.__name__ == "direct"
    monkeypatch.setattr(decoders, "_CPU_JPEG_DECODER", [])
    monkeypatch.setattr(decoders, "_same_decode", lambda direct, public: False)
    assert decoders._cpu_jpeg_decoder().__name__ == "public"
