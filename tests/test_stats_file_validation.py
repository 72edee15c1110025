"""Hostile stats files and checkpoints never lie and never traceback; skipped lists stay bounded.

Every field of a stats file is checked against the state it is derived from, so a hand edit is
refused with one ``StatsFileError`` line naming the field. A dataset that skips half a million
files (a symlink to ``/``) writes a stats file and checkpoints that name the first
``SKIPPED_LISTED`` of them, with the total and the total per reason.
"""

from __future__ import annotations

import json

import pytest
import torch

import prep
from helpers import good_images, make_folder, make_mnist, run
from helpers.errors import refused
from helpers.stats_files import LONG, REASONS, SHA, many_skipped, put, rgb_moments, scale
from prep.engine.checkpoint import CHECKPOINT_VERSION, Progress, load_checkpoint, save_checkpoint
from prep.errors import StatsFileError
from prep.insight.summary import format_summary
from prep.stats.file import SKIPPED_LISTED, SkippedFiles, reason_category


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


# ------------------------------------------------------------------ top-level fields vs the state
def _empty_state(data):
    """The state of no pixels, consistent in itself."""
    data["state"].update(count=[0], mean=[0.0], m2=[0.0], min=[None], max=[None], exact_sum=[0], exact_sumsq=[0])
    data["state"]["histogram"] = [[0] * 256]
    data["state"]["cross"] = [[0] * 4]


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
        pytest.param(put("state", "channels", value=10**12), r"state.channels: expected 1 to 4", id="channels"),
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
        (put("created", value="RAW"), '{"a": {"b": {"c": {"d": {"e": {}}}}}}', r"field 'created.a.b.c.d.e': nested"),
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


# ------------------------------------------------------------------ checkpoints
IDENTITY = {
    "source": {"kind": "folder", "path": "d", "split": None},
    "fingerprint": {"files": 9, "bytes": 10, "sha256": SHA},
    "options": {"mode": "RGB"},
}


def _checkpoint(tmp_path, skipped: int = 3, position: int = 6):
    ck = tmp_path / "ck.json"
    pairs = [(x["path"], x["reason"]) for x in many_skipped(skipped)]
    save_checkpoint(str(ck), IDENTITY, Progress(rgb_moments(), position, pairs))
    return ck


def _load(ck, total=None):
    return load_checkpoint(str(ck), IDENTITY, 3, total)


def test_a_checkpoint_keeps_the_first_skipped_files_and_every_count(tmp_path):
    ck = _checkpoint(tmp_path, skipped=2501, position=2000)
    data = json.loads(ck.read_text())
    assert data["schema_version"] == CHECKPOINT_VERSION == 2
    assert data["skipped"]["count"] == 2501 and len(data["skipped"]["files"]) == SKIPPED_LISTED
    assert ck.stat().st_size < 150_000
    progress = _load(ck)
    assert (progress.position, progress.skipped.count, len(progress.skipped.listed)) == (2000, 2501, SKIPPED_LISTED)
    assert progress.skipped.reasons["not an image file extension"] == 626
    progress.skipped.extend([("late.jpg", "cannot decode: OSError")])
    stats = prep.Stats({"kind": "folder"}, None, "RGB", progress.state, progress.skipped)
    assert stats.skipped_count == 2502 and stats.skipped_reasons["cannot decode"] == 626


def test_a_version_1_checkpoint_with_its_list_of_pairs_is_still_read(tmp_path):
    ck = _checkpoint(tmp_path)
    data = json.loads(ck.read_text())
    data.update(schema_version=1, skipped=[[x["path"], x["reason"]] for x in data["skipped"]["files"]])
    ck.write_text(json.dumps(data))
    assert _load(ck).skipped.count == 3


def _ck_edit(tmp_path, change, raw=None):
    ck = _checkpoint(tmp_path)
    data = json.loads(ck.read_text())
    change(data)
    text = json.dumps(data)
    ck.write_text(text if raw is None else text.replace('"RAW"', raw, 1))
    return ck


def _v1(value):
    return lambda d: d.update(schema_version=1, skipped=value)


@pytest.mark.parametrize(
    ("change", "raw", "message"),
    [
        (put("skipped", "files", value=[{"path": 1, "reason": "x"}] * 3), None, r"'skipped.files': expected a list"),
        (put("skipped", "files", value=[["a", "b"]] * 3), None, r"field 'skipped.files': expected a list of {path"),
        (put("skipped", "count", value=4), None, r"checkpoint field 'skipped.count': 4 skipped, but 3 listed"),
        (put("skipped", "reasons", value={"x": 3}), None, r"checkpoint field 'skipped.reasons': 1 listed file"),
        (put("skipped", value=[["a", "b"]]), None, r"checkpoint field 'skipped': expected an object; got a list"),
        (put("skipped", value=None), None, r"checkpoint field 'skipped': expected an object; got None"),
        (_v1([["a", "b", "c"]]), None, r"checkpoint field 'skipped' must be a list of \[name, reason\] pairs"),
        (_v1([["a", 1]]), None, r"checkpoint field 'skipped' must be a list of \[name, reason\] pairs"),
        (_v1({"a": "b"}), None, r"checkpoint field 'skipped' must be a list of \[name, reason\] pairs"),
        (put("position", value=2.0), None, r"checkpoint field 'position' must be an integer .* got 2.0"),
        (put("position", value="6"), None, r"checkpoint field 'position' must be an integer .* got '6'"),
        (put("position", value=None), None, r"checkpoint field 'position' must be an integer .* got None"),
        (put("position", value=True), None, r"checkpoint field 'position' must be an integer .* got True"),
        (
            put("position", value=3),
            None,
            r"checkpoint field 'position' must be an integer from the state's 4 images",
        ),
        (put("position", value=2**63), None, r"checkpoint field 'position' must be an integer .* to the last; got 9"),
        (put("position", value=10**40), None, r"checkpoint field 'position': an integer longer than any prep"),
        (put("position", value="RAW"), LONG, r"checkpoint field 'position': an integer longer than any prep"),
        (put("position", value="RAW"), "[" * 900 + "]" * 900, r"checkpoint field 'position(\[0\])+': nested"),
        (put("state", "count", value="RAW"), "[" * 900 + "]" * 900, r"field 'state.count(\[0\])+': nested"),
        (put("state", "m2", value=[-1.0] * 3), None, r"checkpoint state.m2: values must be >= 0"),
        (scale("state", "mean", factor=1.001), None, r"checkpoint field 'state.mean': .* does not match state.exact"),
        (put("state", "image_std_count", value=[5] * 3), None, r"checkpoint field 'state.images': 4 is fewer than"),
        (put("state", value=[]), None, r"checkpoint state: expected an object"),
        (put("schema_version", value=3), None, r"checkpoint field 'schema_version': this prep reads versions 1 and 2"),
        (put("schema_version", value=True), None, r"checkpoint field 'schema_version'"),
        (put("source", "kind", value="cifar10"), None, r"checkpoint field 'source' does not match this run"),
    ],
)
def test_malformed_checkpoints_are_refused_in_one_line(tmp_path, change, raw, message):
    refused(_ck_edit(tmp_path, change, raw), message, load=_load)


def test_a_checkpoint_position_past_the_source_is_refused(tmp_path):
    refused(_checkpoint(tmp_path), r"checkpoint field 'position' .* to the source's 5; got 6", lambda ck: _load(ck, 5))
    assert _load(_checkpoint(tmp_path), total=6).position == 6


@pytest.mark.parametrize(
    "text", ["{", "[" * 100_000, '{"kind": "prep.engine.checkpoint", "position": ' + LONG + "}", "\xff"]
)
def test_checkpoints_that_are_not_json_are_refused_in_one_line(tmp_path, text):
    ck = tmp_path / "ck.json"
    ck.write_text(text)
    refused(ck, r"cannot read checkpoint|not a prep checkpoint|an integer longer", load=_load)


# ------------------------------------------------------------------ whole passes (with compute.py's part)


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


def test_a_resumed_pass_keeps_the_skipped_totals_of_its_checkpoint(tmp_path, junk_folder, monkeypatch):
    import prep.engine.measure as compute

    ck = tmp_path / "ck.json"
    monkeypatch.setattr(compute, "FOLDER_CHUNK", 1)
    real = compute.reduce_chunk

    class Stop(Exception):
        pass

    def stop_at_the_second(chunk, *args):
        if chunk.names[0] != "good0.png":
            raise Stop
        return real(chunk, *args)

    monkeypatch.setattr(compute, "reduce_chunk", stop_at_the_second)
    with pytest.raises(Stop):
        prep.compute_stats(junk_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    assert json.loads(ck.read_text())["skipped"]["count"] == 1204
    monkeypatch.setattr(compute, "reduce_chunk", real)
    with pytest.warns(prep.PrepWarning, match="skipped 1204 file"):
        stats = prep.compute_stats(junk_folder, workers=0, checkpoint=ck, resume=True)
    assert (stats.images, stats.skipped_count, len(stats.skipped)) == (2, 1204, SKIPPED_LISTED)
    assert stats.skipped_reasons == {"not an image file extension": 1204}


def test_strict_refuses_a_reused_file_whose_undecodable_files_are_past_the_listed_ones(tmp_path, junk_folder):
    (junk_folder / "zz-broken.jpg").write_bytes(b"not a jpeg")  # listed after the 1,204 passed over in the listing
    out = tmp_path / "out.json"
    assert run("stats", junk_folder, "-o", out, "--workers", 0, "-q").exit_code == 0
    assert json.loads(out.read_text())["skipped"]["reasons"]["cannot decode"] == 1
    again = run("stats", junk_folder, "-o", out, "--strict", "--workers", 0, "-q")
    assert again.exit_code == 1 and "1 file(s) could not be read or decoded" in again.stderr
