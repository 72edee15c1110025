"""prep.engine.checkpoint: a pass killed (kill -9) and resumed equals an uninterrupted one; a
checkpoint of other data or other options is refused; a malformed or edited checkpoint is refused
in one line naming its field; a checkpoint keeps the first skipped files and every total."""

import json
import subprocess
import sys

import pytest
import torch

import prep
from helpers import make_mnist, run
from helpers.errors import refused
from helpers.processes import prep_process, slow_mnist_args, wait_for
from helpers.stats_files import LONG, SHA, many_skipped, put, rgb_moments, scale
from prep.engine.checkpoint import CHECKPOINT_VERSION, Progress, load_checkpoint, moments_loader, save_checkpoint
from prep.errors import StatsFileError
from prep.stats.skipped import SKIPPED_LISTED

# ------------------------------------------------------------------ resume


def test_sigkill_then_resume_gives_the_uninterrupted_result(slow_mnist, tmp_path):
    out, ck = tmp_path / "out.json", tmp_path / "ck.json"
    reference = prep.compute_stats("mnist", root=slow_mnist)
    previous = prep.compute_stats("mnist", root=slow_mnist, split="test")
    previous.save(out)
    before = out.read_bytes()
    args = [*slow_mnist_args(slow_mnist, out, ck, every=2000), "--force"]
    proc = prep_process(*args)
    wait_for(lambda: ck.exists() and json.loads(ck.read_text())["position"] >= 4000)
    proc.kill()
    proc.wait(timeout=30)
    assert out.read_bytes() == before  # the previous JSON survived the kill
    position = json.loads(ck.read_text())["position"]
    assert 0 < position < 60_000

    done = subprocess.run(
        [sys.executable, "-m", "prep", *map(str, args), "--resume", "--batch-size", "5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming from {ck} at image {position}" in done.stderr
    resumed = prep.load_stats(out)
    assert (resumed.mean, resumed.std, resumed.min, resumed.max, resumed.count) == (
        reference.mean,
        reference.std,
        reference.min,
        reference.max,
        reference.count,
    )
    assert resumed.images == 60_000
    assert not ck.exists()  # a completed run removes its checkpoint


def test_resume_without_a_checkpoint_says_it_starts_from_the_beginning(tmp_path):
    result = run("stats", "sample", "--checkpoint", tmp_path / "ck.json", "--resume", "--workers", 0)
    assert result.exit_code == 0
    assert f"no checkpoint at {tmp_path / 'ck.json'}; starting from the beginning" in result.stderr


def test_resume_from_a_checkpoint_of_other_data_is_refused(tmp_path):
    make_mnist(tmp_path)
    ck = tmp_path / "ck.json"
    ck.write_text(json.dumps({"kind": "prep.engine.checkpoint", "source": {"kind": "cifar10"}}))
    with pytest.raises(StatsFileError, match="checkpoint field 'source' does not match"):
        prep.compute_stats("mnist", root=tmp_path, checkpoint=ck, resume=True)


def test_resume_continues_a_folder_run_in_process(tmp_path, image_folder, monkeypatch):
    from prep.engine import loop, reducers

    monkeypatch.setattr(loop, "FOLDER_CHUNK", 2)

    monkeypatch.setattr(loop, "TASK_FILES", 2)
    ck = tmp_path / "ck.json"
    whole = prep.compute_stats(image_folder, workers=0)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    real = reducers.reduce_chunk

    def flaky(task, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(task, *args)

    monkeypatch.setattr(reducers, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(image_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    assert json.loads(ck.read_text())["position"] == 4  # two chunks of two done before the failure
    resumed = prep.compute_stats(image_folder, workers=0, checkpoint=ck, resume=True)
    assert (resumed.mean, resumed.std, resumed.count, resumed.images) == (
        whole.mean,
        whole.std,
        whole.count,
        whole.images,
    )


class _Interrupting(torch.utils.data.Dataset):
    """A dataset of constant images that raises once item ``stop_at`` is read (a crash)."""

    def __init__(self, value, n=12, stop_at=None):
        self.value, self.n, self.stop_at = value, n, stop_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        return torch.full((1, 4, 4), self.value + (i % 3), dtype=torch.uint8)


def _checkpointed_dataset_run(ck, dataset, **kwargs):
    return prep.compute_stats(dataset, batch_size=2, checkpoint=ck, checkpoint_every=2, **kwargs)


def test_dataset_resume_continues_the_same_dataset(tmp_path):
    ck = tmp_path / "ck.json"
    with pytest.raises(KeyboardInterrupt):
        _checkpointed_dataset_run(ck, _Interrupting(10, stop_at=7))
    resumed = _checkpointed_dataset_run(ck, _Interrupting(10), resume=True)
    whole = prep.compute_stats(_Interrupting(10))
    assert (resumed.mean, resumed.std, resumed.images) == (whole.mean, whole.std, whole.images)


@pytest.mark.parametrize(
    "other",
    [_Interrupting(200), _Interrupting(10, n=13)],  # other pixels; same first items but another length
    ids=["other-pixels", "other-length"],
)
def test_dataset_resume_refuses_a_checkpoint_of_another_dataset(tmp_path, other):
    ck = tmp_path / "ck.json"
    with pytest.raises(KeyboardInterrupt):
        _checkpointed_dataset_run(ck, _Interrupting(10, stop_at=7))
    with pytest.raises(StatsFileError, match="checkpoint field 'resume_key' does not match"):
        _checkpointed_dataset_run(ck, other, resume=True)


def test_dataset_id_identifies_the_dataset_for_resume_and_reuse(tmp_path):
    from prep.engine.measure import load_or_compute

    ck = tmp_path / "ck.json"
    with pytest.raises(KeyboardInterrupt):
        _checkpointed_dataset_run(ck, prep.DatasetSource(_Interrupting(10, stop_at=7), dataset_id="pets-v1"))
    with pytest.raises(StatsFileError, match="does not match this run"):
        _checkpointed_dataset_run(ck, prep.DatasetSource(_Interrupting(10), dataset_id="pets-v2"), resume=True)
    resumed = _checkpointed_dataset_run(ck, prep.DatasetSource(_Interrupting(10), dataset_id="pets-v1"), resume=True)
    assert resumed.mean == prep.compute_stats(_Interrupting(10)).mean
    out = tmp_path / "pets.json"
    _, reused = load_or_compute(out, prep.DatasetSource(_Interrupting(10), dataset_id="pets-v1"))
    assert not reused
    _, reused = load_or_compute(out, prep.DatasetSource(_Interrupting(10), dataset_id="pets-v1"))
    assert reused  # the caller's id stands for the contents
    _, reused = load_or_compute(out, prep.DatasetSource(_Interrupting(10), dataset_id="pets-v2"))
    assert not reused


def test_a_checkpoint_without_covariance_is_not_resumed_with_it(tmp_path):
    ck = tmp_path / "ck.json"
    with pytest.raises(KeyboardInterrupt):
        _checkpointed_dataset_run(ck, _Interrupting(10, stop_at=7), covariance=False)
    with pytest.raises(StatsFileError, match="checkpoint field 'options' does not match"):
        _checkpointed_dataset_run(ck, _Interrupting(10), resume=True, covariance=True)


# ------------------------------------------------------------------ the checkpoint and the output


def test_the_checkpoint_is_removed_only_after_the_output_is_written(tmp_path, good_folder, monkeypatch):
    ck, out = tmp_path / "ck.json", tmp_path / "out.json"

    def failing_save(self, path):
        raise prep.PrepError(f"{path}: cannot write stats file (disk full)")

    monkeypatch.setattr(prep.Stats, "save", failing_save)
    result = run("stats", good_folder, "-o", out, "--checkpoint", ck, "--checkpoint-every", 1, "--workers", 0)
    assert result.exit_code == 2 and "disk full" in result.stderr
    assert json.loads(ck.read_text())["position"] == 4  # the finished pass can be resumed, not redone


@pytest.mark.parametrize("position", [0, True, 99, -1, "3"])
def test_an_edited_checkpoint_position_is_refused(tmp_path, good_folder, position, monkeypatch):
    from prep.engine import loop, reducers

    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)

    monkeypatch.setattr(loop, "TASK_FILES", 1)
    ck = tmp_path / "ck.json"

    class Stop(Exception):
        pass

    real = reducers.reduce_chunk
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(*args)

    monkeypatch.setattr(reducers, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    data = json.loads(ck.read_text())
    assert data["position"] == 2 and data["state"]["images"] == 2
    data["position"] = position
    ck.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match="checkpoint field 'position'"):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, resume=True)


# ------------------------------------------------------------------ the checkpoint file


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
    return load_checkpoint(str(ck), IDENTITY, moments_loader(3), total)


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


def test_a_resumed_pass_keeps_the_skipped_totals_of_its_checkpoint(tmp_path, junk_folder, monkeypatch):
    from prep.engine import loop, reducers

    ck = tmp_path / "ck.json"
    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)
    monkeypatch.setattr(loop, "TASK_FILES", 1)
    real = reducers.reduce_chunk

    class Stop(Exception):
        pass

    def stop_at_the_second(chunk, *args):
        if chunk.names[0] != "good0.png":
            raise Stop
        return real(chunk, *args)

    monkeypatch.setattr(reducers, "reduce_chunk", stop_at_the_second)
    with pytest.raises(Stop):
        prep.compute_stats(junk_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    assert json.loads(ck.read_text())["skipped"]["count"] == 1204
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    with pytest.warns(prep.PrepWarning, match="skipped 1204 file"):
        stats = prep.compute_stats(junk_folder, workers=0, checkpoint=ck, resume=True)
    assert (stats.images, stats.skipped_count, len(stats.skipped)) == (2, 1204, SKIPPED_LISTED)
    assert stats.skipped_reasons == {"not an image file extension": 1204}


def _interrupted_checkpoint(tmp_path, good_folder, monkeypatch) -> tuple:
    """A checkpoint of a folder pass stopped after two of its four images."""
    from prep.engine import loop, reducers

    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)

    monkeypatch.setattr(loop, "TASK_FILES", 1)
    ck = tmp_path / "ck.json"
    real, calls = reducers.reduce_chunk, {"n": 0}

    def stop_at_the_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(reducers, "reduce_chunk", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    return ck, json.loads(ck.read_text())


IMPOSSIBLE_STATES = {
    "a per-image std sum beyond half the range": (
        lambda s: {**s, "image_std_sum": [10**29] * 3},
        r"state.image_std_sum': channel 0 holds more",
    ),
    "per-image std counts set to zero": (
        lambda s: {**s, "image_std_count": [0, 0, 0]},
        r"state.image_std_count': \[0, 0, 0\] must equal state.images",
    ),
    "the histogram dropped": (lambda s: {**s, "histogram": None}, r"state.histogram': null"),
    "the cross sums dropped": (lambda s: {**s, "cross": None}, r"state.cross': null, but this run measures"),
}


@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_STATES))
def test_a_checkpoint_with_an_impossible_or_shortened_state_is_refused(tmp_path, good_folder, monkeypatch, name):
    edit, message = IMPOSSIBLE_STATES[name]
    ck, data = _interrupted_checkpoint(tmp_path, good_folder, monkeypatch)
    assert prep.compute_stats(good_folder, workers=0, checkpoint=ck, resume=True).images == 4  # untouched: resumes
    ck2, data = _interrupted_checkpoint(tmp_path, good_folder, monkeypatch)
    data["state"] = edit(data["state"])
    ck2.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=message):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck2, resume=True)


def test_a_checkpoint_without_cross_sums_resumes_a_run_without_covariance(tmp_path, good_folder, monkeypatch):
    from prep.engine import loop, reducers

    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)

    monkeypatch.setattr(loop, "TASK_FILES", 1)
    ck = tmp_path / "ck.json"
    real, calls = reducers.reduce_chunk, {"n": 0}

    def stop(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(reducers, "reduce_chunk", stop)
    with pytest.raises(KeyboardInterrupt):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, checkpoint_every=1, covariance=False)
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    assert json.loads(ck.read_text())["state"]["cross"] is None
    resumed = prep.compute_stats(good_folder, workers=0, checkpoint=ck, resume=True, covariance=False)
    assert resumed.images == 4 and resumed.covariance is None
