"""prep.stats.file: the stats file round trip, atomic writes, staleness; every field checked against
the state it is derived from, so a hand edit, a damaged or a fuzzed file is refused with one
``StatsFileError`` line naming the field (and the command line recomputes over it); skipped lists
bounded to the first ``SKIPPED_LISTED`` files with every total kept; the covariance and its PCA."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import prep
from helpers import good_images, make_folder, make_mnist, mutate, run
from helpers.errors import refused
from helpers.stats_files import LONG, REASONS, SHA, many_skipped, put, rgb_moments, scale
from prep.errors import OutputError, StaleStatsError, StatsFileError
from prep.insight.summary import format_summary
from prep.stats.file import SCHEMA_VERSION
from prep.stats.skipped import SKIPPED_LISTED, SkippedFiles, reason_category


@pytest.fixture
def saved(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    path = tmp_path / "mnist.json"
    stats.save(path)
    return tmp_path, stats, path


def test_round_trip_keeps_every_number(saved):
    _, stats, path = saved
    loaded = prep.load_stats(path)
    assert loaded.to_dict() == stats.to_dict()
    assert (loaded.mean, loaded.std, loaded.min, loaded.max) == (stats.mean, stats.std, stats.min, stats.max)
    assert isinstance(loaded.mean, tuple) and isinstance(loaded.mean[0], float)
    assert prep.Stats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()


def test_documented_fields_are_present(saved):
    _, _stats, path = saved
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["prep_version"] == prep.__version__
    assert set(data["source"]) == {"kind", "path", "split", "mode", "images"}
    assert data["source"]["images"] == 300 and data["source"]["split"] == "train"
    assert set(data["fingerprint"]) == {"files", "bytes", "sha256"}
    assert data["options"] == {"mode": "L", "transform": None, "decoder": None}  # idx: no files decoded
    assert data["channels"] == 1 and data["pixel_max"] == 255
    for key in ("count", "mean", "std", "min", "max", "per_image_std_mean", "nonfinite"):
        assert len(data[key]) == 1, key
    assert data["skipped"] == {"count": 0, "reasons": {}, "files": []}
    assert all(isinstance(v, int) for v in data["state"]["exact_sum"] + data["state"]["exact_sumsq"])


def test_save_is_atomic_and_leaves_no_temp_files(saved, monkeypatch):
    tmp_path, stats, path = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OutputError, match=r"cannot write stats file \(No space left on device\)"):
        stats.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.pop("std"), "missing field 'std'"),
        (lambda d: d.update(mean=[0.1, 0.2]), "field 'mean': expected 1 values"),
        (lambda d: d.update(std=[-0.3]), "field 'std': must be non-negative"),
        (lambda d: d.update(schema_version=99), "unknown schema version 99"),
        (lambda d: d.update(std=[0.5]), "field 'std': .* does not match the stored state"),
        (lambda d: d["source"].update(mode="XYZ"), "field 'source.mode'"),
        (lambda d: d["state"].update(m2=[-1.0]), "state.m2"),
        (lambda d: d.update(channels=3), "field 'channels'"),
        (lambda d: d.update(mean="0.1"), "field 'mean': expected a list"),
    ],
)
def test_hand_edited_files_raise_one_error_class_naming_the_field(saved, change, message):
    _, _, path = saved
    _edit(path, change)
    with pytest.raises(StatsFileError, match=message) as info:
        prep.load_stats(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b"null", b'{"schema_version": true}'])
def test_garbage_files_are_stats_file_errors(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(StatsFileError):
        prep.load_stats(path)


def test_truncated_file_is_a_stats_file_error(saved):
    _, _, path = saved
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StatsFileError, match="not valid JSON"):
        prep.load_stats(path)


def test_verify_against_detects_changed_data(saved):
    root, _, path = saved
    assert prep.load_stats(path, verify_against="mnist", root=root).images == 300
    make_mnist(root, n_train=301)  # rewritten data
    with pytest.raises(StaleStatsError, match="stale: data changed"):
        prep.load_stats(path, verify_against="mnist", root=root)


def test_stale_reason_names_what_changed(saved):
    root, stats, _ = saved
    src = prep.resolve_source("mnist", root=root, split="test")
    assert "split changed (train -> test)" in stats.stale_reason(src.describe(), src.fingerprint(), "L")
    same = prep.resolve_source("mnist", root=root)
    assert stats.stale_reason(same.describe(), same.fingerprint(), "L") is None
    assert "mode changed (L -> RGB)" in stats.stale_reason(same.describe(), same.fingerprint(), "RGB")


# ------------------------------------------------------------------ every field vs the state


@pytest.fixture(scope="module")
def mnist_text(tmp_path_factory) -> str:
    """A stats file prep wrote for 8-bit MNIST-format data (exact integer sums kept), as text."""
    root = tmp_path_factory.mktemp("mnist")
    make_mnist(root, n_train=40, n_test=5)
    path = root / "s.json"
    prep.compute_stats("mnist", root=root).save(path)
    return path.read_text()


@pytest.fixture(scope="module")
def folder_text(tmp_path_factory) -> str:
    """A folder's stats file listing two skipped files: an undecodable image and a text file."""
    root = make_folder(tmp_path_factory.mktemp("folder") / "imgs", n_per_class=2)
    (root / "ants" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "ants" / "notes.txt").write_text("not an image")
    with pytest.warns(prep.PrepWarning, match="skipped 2 file"):
        stats = prep.compute_stats(root, workers=0)
    path = root.parent / "s.json"
    stats.save(path)
    return path.read_text()


def _write(tmp_path, text: str, change=None, raw: str | None = None):
    """The stats file ``text`` edited by ``change(data)``; ``raw`` JSON replaces the string "RAW"."""
    data = json.loads(text)
    if change is not None:
        change(data)
    out = json.dumps(data)
    if raw is not None:
        out = out.replace('"RAW"', raw, 1)
    path = tmp_path / "edited.json"
    path.write_text(out)
    return path


def _empty_state(data):
    """The state of no pixels, consistent in itself."""
    data["state"].update(count=[0], mean=[0.0], m2=[0.0], min=[None], max=[None], exact_sum=[0], exact_sumsq=[0])
    data["state"]["histogram"] = [[0] * 256]
    data["state"]["cross"] = [[0]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(scale("count", factor=2), r"field 'count': \[\d+\] does not match the stored state", id="count"),
        pytest.param(put("count", value=[-1]), r"field 'count': expected integers from 0", id="count-negative"),
        pytest.param(put("count", value=[2.5]), r"field 'count': expected integers", id="count-float"),
        pytest.param(
            put("pixel_max", value=65535),
            r"field 'pixel_max': 65535 does not match the stored state \(255.0\)",
            id="pixel_max",
        ),
        pytest.param(put("pixel_max", value="255"), r"field 'pixel_max': expected an integer or a number", id="pm"),
        pytest.param(
            scale("per_image_std_mean", factor=1.01),
            r"field 'per_image_std_mean': .* does not match the stored state",
            id="per_image_std_mean",
        ),
        pytest.param(put("nonfinite", value=[3]), r"field 'nonfinite': \[3\] does not match", id="nonfinite"),
        pytest.param(put("skipped", "count", value=5), r"field 'skipped.count': 5 skipped, but 0 listed", id="sk"),
        pytest.param(
            put("source", "images", value=41),
            r"field 'source.images': 41 does not match the stored state \(40\)",
            id="images",
        ),
        pytest.param(put("source", "images", value=-1), r"field 'source.images': expected an integer from 0", id="im"),
        pytest.param(lambda d: d["source"].pop("images"), r"missing field 'source.images'", id="images-missing"),
        pytest.param(put("source", "path", value=5), r"field 'source.path': expected a string or null", id="path"),
        pytest.param(put("source", "kind", value=""), r"field 'source.kind': expected a non-empty string", id="kind"),
        pytest.param(put("source", "x", value=[1]), r"field 'source.x': expected a string, number or null", id="src"),
        pytest.param(put("options", "mode", value="RGB"), r"field 'options.mode': expected 'L'", id="options"),
        pytest.param(put("options", "batch_size", value=9), r"field 'options.batch_size': unknown field", id="opt"),
        pytest.param(put("options", "transform", value=3), r"field 'options.transform': expected a string", id="tr"),
        pytest.param(put("junk", value=1), r"field 'junk': unknown field", id="unknown-field"),
        pytest.param(put("created", value=5), r"field 'created': expected a string; got int", id="created-int"),
        pytest.param(put("created", value="yesterday"), r"field 'created': expected an ISO 8601 time", id="created"),
        pytest.param(put("prep_version", value=None), r"field 'prep_version': expected a string", id="version"),
        pytest.param(
            scale("state", "mean", factor=1 + 1e-6),
            r"field 'state.mean': .* does not match state.exact_sum and state.exact_sumsq",
            id="state.mean",
        ),
        pytest.param(
            scale("state", "m2", factor=1.001),
            r"field 'state.m2': .* does not match state.exact_sum and state.exact_sumsq",
            id="state.m2",
        ),
        pytest.param(
            put("state", "pixel_max", value=65535.0),
            r"field 'state.pixel_max': exact 8-bit sums are kept, so it must be 255",
            id="state.pixel_max",
        ),
        pytest.param(put("state", "images", value=0), r"field 'state.images': 0 is fewer", id="state.images"),
        pytest.param(put("state", "image_std_count", value=[41]), r"field 'state.images': 40 is", id="std_count"),
        pytest.param(_empty_state, r"field 'state.count': every channel needs at least one pixel", id="no-pixel"),
        pytest.param(put("state", "count", value=[2**63]), r"state.count: integer out of range", id="count-2**63"),
        pytest.param(put("state", "channels", value=10**12), r"state.channels: expected 1 to 1024", id="channels"),
        pytest.param(
            put("state", "exact_sum", value=[10**29]), r"state.(exact_sum|histogram): inconsistent", id="exact_sum"
        ),
    ],
)
def test_edited_fields_are_refused_naming_the_field(tmp_path, mnist_text, change, message):
    refused(_write(tmp_path, mnist_text, change), message)


# ------------------------------------------------------------------ fingerprints


@pytest.mark.parametrize(
    ("fingerprint", "message"),
    [
        ({"files": 1}, r"missing field 'fingerprint.bytes'"),
        ({"files": "x", "bytes": 1, "sha256": SHA}, r"field 'fingerprint.files': expected an integer; got str"),
        ({"files": True, "bytes": 1, "sha256": SHA}, r"field 'fingerprint.files': expected an integer; got True"),
        ({"files": -1, "bytes": 1, "sha256": SHA}, r"field 'fingerprint.files': expected an integer from 0 to"),
        ({"files": 1, "bytes": 2**63, "sha256": SHA}, r"field 'fingerprint.bytes': expected an integer from 0 to"),
        ({"files": 1, "bytes": 1.5, "sha256": SHA}, r"field 'fingerprint.bytes': expected an integer; got float"),
        ({"files": 1, "bytes": 1, "sha256": "abc"}, r"field 'fingerprint.sha256': expected a SHA-256"),
        ({"files": 1, "bytes": 1, "sha256": SHA.upper()}, r"field 'fingerprint.sha256': expected a SHA-256"),
        ({"files": 1, "bytes": 1, "sha256": SHA, "checksum": "x"}, r"field 'fingerprint.checksum': expected a SHA"),
        ({"files": 1, "bytes": 1, "sha256": SHA, "mtime": 1}, r"field 'fingerprint.mtime': unknown field"),
        ({"files": 1, "bytes": 1, "sha256": SHA, "dataset_id": "a"}, r"field 'fingerprint': mixes the keys"),
        ({"dataset_id": "", "images": 40}, r"field 'fingerprint.dataset_id': expected a non-empty string"),
        ({"dataset_id": "pets", "images": -2}, r"field 'fingerprint.images': expected an integer from 0"),
        ([1, 2], r"field 'fingerprint': expected an object or null; got list"),
        ("abc", r"field 'fingerprint': expected an object or null; got str"),
    ],
)
def test_fingerprints_not_of_a_shape_prep_writes_are_refused(tmp_path, mnist_text, fingerprint, message):
    refused(_write(tmp_path, mnist_text, put("fingerprint", value=fingerprint)), message)


@pytest.mark.parametrize(
    "fingerprint",
    [
        None,
        {"files": 0, "bytes": 0, "sha256": SHA},
        {"files": 3, "bytes": 2**63 - 1, "sha256": SHA, "checksum": SHA[::-1]},  # a folder measured with checksum
        {"dataset_id": "pets-v3-train", "images": 40},  # a Python dataset given a dataset_id
        {"dataset_id": "stream-v1", "images": None},  # an iterable without a length, given a dataset_id
    ],
)
def test_every_shape_of_fingerprint_prep_writes_is_accepted(tmp_path, mnist_text, fingerprint):
    loaded = prep.load_stats(_write(tmp_path, mnist_text, put("fingerprint", value=fingerprint)))
    assert loaded.fingerprint == fingerprint


def test_the_files_prep_writes_for_each_kind_of_source_load(tmp_path, mnist_text, folder_text):
    folder = tmp_path / "rgb"
    good_images(folder, 2)
    kinds = {
        "mnist": mnist_text,
        "folder": folder_text,
        "sample": json.dumps(prep.compute_stats("sample", workers=0).to_dict()),
        "float tensors with NaN": json.dumps(
            prep.compute_stats([torch.tensor([[[0.5, float("nan")], [0.25, 1.0]]])]).to_dict()
        ),
        "16-bit tensors": json.dumps(prep.compute_stats([torch.arange(12, dtype=torch.int16).view(3, 2, 2)]).to_dict()),
        "RGB folder as L": json.dumps(prep.compute_stats(folder, mode="L", workers=0).to_dict()),
    }
    for kind, text in kinds.items():
        path = tmp_path / "s.json"
        path.write_text(text)
        assert prep.load_stats(path).to_dict() == json.loads(text), kind


# ------------------------------------------------------------------ numbers JSON cannot hold, junk, nesting


@pytest.mark.parametrize(
    ("change", "raw", "message"),
    [
        (put("mean", value=["RAW"]), "1e400", r"field 'mean': expected finite numbers; got inf"),
        (put("std", value=["RAW"]), "NaN", r"field 'std': expected finite numbers; got nan"),
        (put("state", "mean", value=["RAW"]), "1e400", r"state.mean: values must be finite"),
        (put("count", value=["RAW"]), LONG, r"field 'count\[0\]': an integer longer than any prep writes"),
        (put("schema_version", value="RAW"), LONG, r"field 'schema_version': an integer longer than any"),
        (put("state", "exact_sum", value=["RAW"]), LONG, r"field 'state.exact_sum\[0\]': an integer longer"),
        (put("state", "images", value="RAW"), "-" + LONG, r"field 'state.images': an integer longer"),
        (put("fingerprint", "bytes", value="RAW"), "9" * 40, r"field 'fingerprint.bytes': an integer longer"),
        (put("skipped", "count", value="RAW"), LONG, r"field 'skipped.count': an integer longer"),
        (put("source", "kind", value="RAW"), "[" * 500 + "]" * 500, r"field 'source.kind(\[0\])+': nested deeper"),
        (put("state", "count", value="RAW"), "[" * 900 + "]" * 900, r"field 'state.count(\[0\])+': nested deeper"),
        (put("junk", value="RAW"), "[" * 100_000 + "]" * 100_000, r"not valid JSON"),
        (
            put("created", value="RAW"),
            '{"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}',
            r"field 'created.a.b.c.d.e.f.g': nested",
        ),
    ],
)
def test_numbers_and_junk_json_can_hold_are_refused_in_one_line(tmp_path, mnist_text, change, raw, message):
    refused(_write(tmp_path, mnist_text, change, raw), message)


@pytest.mark.parametrize("where", [("state", "images"), ("state", "channels"), ("state", "version"), ("count", 0)])
def test_python_integers_of_thousands_of_digits_are_refused_not_a_value_error(mnist_text, where):
    data = json.loads(mnist_text)
    put(*where, value=10**5000)(data)
    with pytest.raises(StatsFileError, match="an integer longer than any prep writes"):
        prep.Stats.from_dict(data)


def test_a_cli_show_of_an_edited_file_is_one_error_line_with_exit_code_2(tmp_path, mnist_text):
    path = _write(tmp_path, mnist_text, scale("count", factor=2))
    result = run("show", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"prep: error: {path}: field 'count': ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ the skipped list


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("not an image file extension", "not an image file extension"),
        ("cannot decode: UnidentifiedImageError: cannot identify image file 'a: b'", "cannot decode"),
        ("symlink loop: Too many levels of symbolic links", "symlink loop"),
        ("cannot read: Permission denied", "cannot read"),
    ],
)
def test_reasons_are_grouped_by_the_text_before_the_first_colon(reason, category):
    assert reason_category(reason) == category


def test_a_stats_file_lists_the_first_skipped_files_and_counts_them_all(tmp_path):
    stats = prep.Stats({"kind": "folder", "path": "d", "split": None}, None, "RGB", rgb_moments(), many_skipped(2501))
    assert len(stats.skipped) == SKIPPED_LISTED and stats.skipped[0] == {"path": "sys/file000000", "reason": REASONS[0]}
    assert stats.skipped_count == 2501
    assert stats.skipped_reasons == {
        "cannot decode": 625,
        "cannot read": 625,
        "not an image file extension": 626,
        "symlink loop": 625,
    }
    path = tmp_path / "s.json"
    stats.save(path)
    assert path.stat().st_size < 150_000
    saved = json.loads(path.read_text())["skipped"]
    assert (
        saved["count"] == 2501 and len(saved["files"]) == SKIPPED_LISTED and saved["reasons"] == stats.skipped_reasons
    )
    loaded = prep.load_stats(path)
    assert (loaded.skipped, loaded.skipped_count, loaded.skipped_reasons) == (
        stats.skipped,
        2501,
        stats.skipped_reasons,
    )
    shown = format_summary(loaded, details=True)
    assert "sys/file000009" in shown and "sys/file000010" not in shown
    assert "... and 2491 more (the file lists the first 1000)" in shown
    assert "2501 files: 625 cannot decode, 625 cannot read, 626 not an image file extension, 625 symlink loop" in shown
    assert "(skipped 2501 files)" in format_summary(loaded)


def test_a_few_skipped_files_are_all_listed_and_shown_with_their_totals(folder_text, tmp_path):
    loaded = prep.load_stats(_write(tmp_path, folder_text))
    assert loaded.skipped_count == 2 and loaded.skipped_reasons == {
        "cannot decode": 1,
        "not an image file extension": 1,
    }
    assert [x["path"] for x in loaded.skipped] == ["ants/notes.txt", "ants/broken.jpg"]
    shown = format_summary(loaded, details=True)
    assert "2 files: 1 cannot decode, 1 not an image file extension" in shown and "more" not in shown


def test_stats_keep_a_skipped_files_tally_as_given():
    tally = SkippedFiles()
    tally.extend((f"f{i}", REASONS[1]) for i in range(1500))
    stats = prep.Stats({"kind": "folder"}, None, "RGB", rgb_moments(), tally)
    assert (len(stats.skipped), stats.skipped_count, stats.skipped_reasons) == (1000, 1500, {"cannot decode": 1500})


def _skipped_edit(files=None, count=None, reasons=None, **extra):
    def change(data):
        skipped = data["skipped"]
        if files is not None:
            skipped["files"] = files(skipped["files"])
        if count is not None:
            skipped["count"] = count
        if reasons is not None:
            skipped["reasons"] = reasons
        skipped.update(extra)

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_skipped_edit(files=lambda f: f * 501, count=1002), r"field 'skipped.files': lists 1002 files; at most 1000"),
        (_skipped_edit(count=1), r"field 'skipped.count': 1 skipped, but 2 listed"),
        (_skipped_edit(count=3), r"field 'skipped.count': 3 skipped, but 2 listed"),
        (_skipped_edit(count=-2), r"field 'skipped.count': expected an integer from 0"),
        (_skipped_edit(count=2.0), r"field 'skipped.count': expected an integer; got float"),
        (_skipped_edit(reasons={"cannot decode": 1}), r"field 'skipped.reasons': the totals add up to 1; .* is 2"),
        (_skipped_edit(reasons={"cannot decode": 2}), r"1 listed file\(s\) skipped for 'not an image file ext"),
        (_skipped_edit(reasons={"cannot decode": 2, "x": 0}), r"field 'skipped.reasons.x': expected a positive"),
        (_skipped_edit(reasons={"cannot decode": True}), r"field 'skipped.reasons.cannot decode': expected a pos"),
        (_skipped_edit(reasons=[2]), r"field 'skipped.reasons': expected an object; got list"),
        (_skipped_edit(files=lambda f: [{"path": 1, "reason": "x"}, f[1]]), r"'skipped.files': expected a list of"),
        (_skipped_edit(files=lambda f: [{"path": "a"}, f[1]]), r"field 'skipped.files': expected a list of"),
        (_skipped_edit(files=lambda f: [{**f[0], "size": 1}, f[1]]), r"field 'skipped.files': expected a list of"),
        (_skipped_edit(files=lambda f: {"a": 1}), r"field 'skipped.files': expected a list; got dict"),
        (_skipped_edit(more=True), r"field 'skipped.more': unknown field"),
        (put("skipped", value=[]), r"field 'skipped': expected an object; got list"),
    ],
)
def test_edited_skipped_lists_are_refused_naming_the_field(tmp_path, folder_text, change, message):
    refused(_write(tmp_path, folder_text, change), message)


def test_a_file_written_before_per_reason_totals_still_loads(tmp_path, folder_text):
    legacy = _write(tmp_path, folder_text, lambda d: d["skipped"].pop("reasons"))
    assert prep.load_stats(legacy).skipped_reasons == {"cannot decode": 1, "not an image file extension": 1}

    def miscounted(data):
        data["skipped"].pop("reasons")
        data["skipped"]["count"] = 7

    refused(_write(tmp_path, folder_text, miscounted), r"missing field 'skipped.reasons'")


def test_a_pass_that_skips_thousands_of_files_writes_a_bounded_file(tmp_path, junk_folder):
    out = tmp_path / "out.json"
    result = run("stats", junk_folder, "-o", out, "--workers", 0, "-q")
    assert result.exit_code == 0, result.output
    assert "skipped 1204 file(s)" in result.stderr
    skipped = json.loads(out.read_text())["skipped"]
    assert (skipped["count"], len(skipped["files"])) == (1204, SKIPPED_LISTED)
    assert skipped["reasons"] == {"not an image file extension": 1204}
    shown = run("show", out)
    assert "... and 1194 more (the file lists the first 1000)" in shown.stdout


# ------------------------------------------------------------------ damaged and fuzzed files


_VALID_STATS: dict = {}


def _valid_stats_text() -> str:
    if not _VALID_STATS:
        stats = prep.compute_stats([torch.arange(12, dtype=torch.uint8).view(3, 2, 2)])
        _VALID_STATS["text"] = json.dumps(stats.to_dict())
    return _VALID_STATS["text"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda flips, cut: mutate(_valid_stats_text().encode(), flips, cut),
            st.lists(
                st.tuples(st.integers(0, 10**5), st.sampled_from(b'{}[]",:0123456789.-eE nul')), min_size=1, max_size=4
            ),
            st.one_of(st.none(), st.integers(0, 3000)),
        ),
    )
)
def test_fuzzed_stats_files_raise_stats_file_error_only(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "s.json"
    path.write_bytes(data)
    with contextlib.suppress(StatsFileError):  # the one error class; anything else fails the test
        prep.load_stats(path)


def test_a_cli_run_on_a_damaged_stats_file_recomputes(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "s.json"
    out.write_text('{"schema_version": 1, "mean": [')
    result = run("stats", "mnist", "--root", tmp_path, "-o", out)
    assert result.exit_code == 0 and "not valid JSON" in result.stderr and "recomputing" in result.stderr
    assert prep.load_stats(out).images == 300
    bad_show = run("show", tmp_path / "nope.json")
    assert bad_show.exit_code == 2 and bad_show.stderr.count("\n") == 1


# ------------------------------------------------------------------ covariance and PCA (--covariance)


def test_pca_is_the_sorted_signed_eigen_decomposition(tmp_path):
    stats = prep.compute_stats("sample", covariance=True, workers=0)
    pca = stats.pca
    cov = np.array(stats.covariance)
    vectors = np.array(pca["eigvec"])
    assert pca["eigval"] == sorted(pca["eigval"], reverse=True)
    np.testing.assert_allclose(cov @ vectors, vectors * np.array(pca["eigval"]), atol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
    for k in range(3):  # the largest-magnitude component of each eigenvector is positive
        assert vectors[np.argmax(np.abs(vectors[:, k])), k] > 0


def test_stats_file_covariance_round_trip_reuse_and_edits(tmp_path):
    out = tmp_path / "s.json"
    run("stats", "sample", "-o", out, "--workers", 0, "--no-covariance")
    assert prep.load_stats(out).covariance is None
    assert "up to date" in run("stats", "sample", "-o", out, "--workers", 0).output  # the default does not ask
    asked = run("stats", "sample", "-o", out, "--covariance", "--workers", 0)
    assert "made without it" in asked.stderr and prep.load_stats(out).covariance is not None
    assert "is up to date" in run("stats", "sample", "-o", out, "--workers", 0).stdout
    shown = run("show", out)
    assert "covariance R" in shown.stdout and "pca eigval" in shown.stdout
    for edit, message in (
        (lambda d: d["covariance"][0].__setitem__(1, 0.5), "field 'covariance'"),
        (lambda d: d["pca"]["eigval"].__setitem__(0, 1.0), "field 'pca'"),
        (lambda d: d["state"]["cross"][0].__setitem__(1, 7), "state.cross"),
    ):
        data = json.loads(out.read_text())
        edit(data)
        (tmp_path / "e.json").write_text(json.dumps(data))
        with pytest.raises(StatsFileError, match=message):
            prep.load_stats(tmp_path / "e.json")


def test_a_file_whose_covariance_is_not_one_is_refused(tmp_path):
    """prep 0.3 added 8-bit and 16-bit cross sums as they were: such a state gives a covariance
    whose diagonal is not std**2; it is refused on load, never trusted."""
    grey = np.random.default_rng(4).integers(0, 65536, (10, 12)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    stats = prep.compute_stats(tmp_path, workers=0)
    path = tmp_path / "s.json"
    stats.save(path)
    assert prep.load_stats(path).covariance == stats.covariance
    data = json.loads(path.read_text())
    state = stats.state
    eight = prep.ChannelMoments(3, covariance=True).update(
        torch.from_numpy(np.asarray(Image.open(tmp_path / "b.png")).transpose(2, 0, 1).copy())
    )
    mixed = [[a + b for a, b in zip(ra, rb)] for ra, rb in zip(state.cross, eight.cross)]  # no unit conversion
    data["state"]["cross"] = mixed
    bad = prep.Stats(stats.source, None, "RGB", prep.ChannelMoments.from_state_dict(data["state"]))
    data["covariance"], data["pca"] = bad.covariance, bad.pca  # the summaries consistent with the bad state
    path.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=r"covariance.*std\*\*2"):
        prep.load_stats(path)


def test_is_valid_file_keeps_the_skipped_files_out_of_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "pets"
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(root / split / label / f"{i}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.warns(prep.PrepWarning, match="skipped 2 file"):
        stats = prep.compute_stats(root, split="train", workers=0)
    path = tmp_path / "s.json"
    stats.save(path)
    loaded = prep.load_stats(path)
    with pytest.raises(Exception, match=r"cannot identify|broken"):
        ImageFolder(root / "train")[len(ImageFolder(root / "train")) - 1]  # ImageFolder alone loads it
    dataset = ImageFolder(str(root / "train"), is_valid_file=loaded.is_valid_file)
    names = sorted(os.path.basename(p) for p, _ in dataset.samples)
    assert names == ["0.png", "0.png", "1.png", "1.png"] and len(dataset) == 4
    assert all(dataset[i][0].size == (4, 4) for i in range(len(dataset)))
    assert not loaded.is_valid_file(root / "train" / "dog" / "broken.jpg")
    assert not loaded.is_valid_file(root / "train" / "cat" / "notes.txt")  # torchvision's extension rule
    assert loaded.is_valid_file(root / "train" / "dog" / "0.png")
    mnist = prep.compute_stats(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(prep.OptionError, match="is for image folders"):
        mnist.is_valid_file("x.png")


def test_staleness_and_verify_against_say_what_to_give(tmp_path):
    root = tmp_path / "pets"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(root / split / "cat" / "a.png")
    path = tmp_path / "pets-train.json"
    prep.compute_stats(root, split="train", workers=0).save(path)
    result = run("check", path, root / "val", "--workers", 0)
    assert result.exit_code != 0
    assert "source split changed (train -> None) and its path" in result.output + result.stderr
    with pytest.raises(prep.SourceError, match=r"comes from .*pets-train\.json: give verify_against the folder"):
        prep.load_stats(path, verify_against=root / "train")
    assert prep.load_stats(path, verify_against=root).images == 1  # the parent folder, the split from the file
