"""prep.engine.checkpoint: a pass killed (kill -9) and resumed equals an uninterrupted one; a
checkpoint of other data or other options is refused, and an edited one names its field."""

import json
import subprocess
import sys

import pytest
import torch

import prep
from helpers import make_mnist, run
from helpers.processes import prep_process, slow_mnist_args, wait_for
from prep.errors import StatsFileError

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
    import prep.engine.measure as compute

    monkeypatch.setattr(compute, "FOLDER_CHUNK", 2)
    ck = tmp_path / "ck.json"
    whole = prep.compute_stats(image_folder, workers=0)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    real = compute.reduce_chunk

    def flaky(task, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(task, *args)

    monkeypatch.setattr(compute, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(image_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(compute, "reduce_chunk", real)
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
    import prep.engine.measure as compute

    monkeypatch.setattr(compute, "FOLDER_CHUNK", 1)
    ck = tmp_path / "ck.json"

    class Stop(Exception):
        pass

    real = compute.reduce_chunk
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(*args)

    monkeypatch.setattr(compute, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(compute, "reduce_chunk", real)
    data = json.loads(ck.read_text())
    assert data["position"] == 2 and data["state"]["images"] == 2
    data["position"] = position
    ck.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match="checkpoint field 'position'"):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, resume=True)
