"""prep.engine.measure with per_class: each class of a folder in ImageFolder's layout measured in
the same pass, against NumPy over each class's pixels; workers, archives, resume and shards give
the same classes exactly; sources without classes are refused in one line."""

from __future__ import annotations

import json
import math
import tarfile
import zipfile

import numpy as np
import pytest

import prep
from helpers import assert_close, exact_stats, make_class_folder, pil_pixels, reference_stats
from helpers.formats import CLASS_LEVELS
from prep.errors import OptionError

pytestmark = pytest.mark.filterwarnings("ignore::prep.PrepWarning")
NUMBERS = ("images", "count", "mean", "std", "min", "max")


@pytest.fixture
def classes(tmp_path):
    root = tmp_path / "pets"
    return root, make_class_folder(root)


def numbers(stats) -> dict:
    """Each class's numbers as the stats file writes them (the state aside)."""
    return {name: {k: entry[k] for k in NUMBERS} for name, entry in stats.to_dict()["per_class"].items()}


def test_each_class_equals_numpy_over_its_pixels_and_skips_only_its_bad_file(classes):
    root, files = classes
    by_workers = {w: prep.compute_stats(root, per_class=True, workers=w) for w in (0, 2)}
    stats = by_workers[0]
    assert stats.classes == ("birds", "cats", "dogs", "night", "zebras")  # torchvision's find_classes
    from torchvision.datasets.folder import find_classes

    assert list(stats.classes) == find_classes(str(root))[0]
    assert list(stats.per_class) == ["birds", "cats", "dogs", "night"]  # zebras has no image
    assert stats.skipped_count == 2  # dogs/broken.png and cats/notes.txt
    for name, paths in files.items():
        pixels = np.concatenate([pil_pixels(p) for p in paths])
        ref, exact = reference_stats(pixels), exact_stats(pixels.astype(np.uint8))
        part = stats.class_stats(name)
        assert part.images == len(paths)  # the broken file counts in no class
        assert part.count == (ref["count"],) * 3
        assert list(part.mean) == exact["mean"]
        assert_close(part.std, [math.sqrt(v) for v in exact["var"]], rel=1e-15)
        assert_close(part.std, ref["std"])
        assert_close(part.min, ref["min"], rel=0)
        assert_close(part.max, ref["max"], rel=0)
        assert part.source["class"] == name
    assert numbers(by_workers[2]) == numbers(stats)
    assert prep.compute_stats(root, workers=0).to_dict()["state"] == stats.to_dict()["state"]  # whole unchanged


def test_the_classes_add_up_exactly_to_the_whole(classes):
    root, _ = classes
    stats = prep.compute_stats(root, per_class=True, workers=2)
    states = list(stats.class_states.values())
    merged = states[0]
    for state in states[1:]:
        merged = merged.merge(state)
    whole = stats.state
    for field in ("images", "exact_sum", "exact_sumsq", "image_std_sum", "cross"):
        assert getattr(merged, field) == getattr(whole, field), field
    for field in ("count", "histogram", "min", "max", "image_std_count"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
    assert merged.compute() == whole.compute()


def test_an_archive_of_the_tree_gives_the_folder_s_classes(classes, tmp_path):
    root, _ = classes
    folder = prep.compute_stats(root, per_class=True, workers=0)
    zipped = tmp_path / "pets.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    archive = prep.compute_stats(zipped, per_class=True, workers=2)
    assert archive.classes == ("birds", "cats", "dogs", "night")  # an archive has no empty folders
    assert numbers(archive) == numbers(folder)
    tarred = tmp_path / "splits.tar.gz"  # split/class/file, read after --split
    with tarfile.open(tarred, "w:gz") as tf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                tf.add(path, "train/" + path.relative_to(root).as_posix())
    split = prep.compute_stats(tarred, split="train", per_class=True, workers=0)
    assert numbers(split) == numbers(folder)


def test_resume_gives_the_classes_of_one_pass(classes, tmp_path, monkeypatch):
    from prep.engine import loop, reducers

    root, _ = classes
    whole = prep.compute_stats(root, per_class=True, workers=0)
    monkeypatch.setattr(loop, "FOLDER_CHUNK", 3)
    monkeypatch.setattr(loop, "TASK_FILES", 3)
    ck = tmp_path / "ck.json"
    real, calls = reducers.reduce_chunk, {"n": 0}

    class Stop(Exception):
        pass

    def flaky(task, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Stop
        return real(task, *args)

    monkeypatch.setattr(reducers, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(root, per_class=True, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(reducers, "reduce_chunk", real)
    saved = json.loads(ck.read_text())
    assert saved["position"] == 9 and set(saved["state"]) == {"overall", "classes"}
    with pytest.raises(prep.StatsFileError, match="does not match this run"):  # classes are part of the run
        prep.compute_stats(root, workers=0, checkpoint=ck, resume=True)
    resumed = prep.compute_stats(root, per_class=True, workers=0, checkpoint=ck, resume=True)
    assert numbers(resumed) == numbers(whole)
    assert resumed.to_dict()["state"]["exact_sum"] == whole.to_dict()["state"]["exact_sum"]


def test_three_shards_merge_into_the_classes_of_one_pass(classes, tmp_path):
    root, _ = classes
    whole = prep.compute_stats(root, per_class=True, workers=0)
    paths = []
    for i in range(3):
        part = prep.compute_stats(root, per_class=True, workers=0, shard=f"{i}/3")
        paths.append(tmp_path / f"part{i}.json")
        part.save(paths[-1])
    merged = prep.merge_stats(paths[::-1])
    assert merged.classes == whole.classes
    assert numbers(merged) == numbers(whole)
    for name in whole.per_class:
        a, b = merged.class_states[name], whole.class_states[name]
        assert (a.exact_sum, a.exact_sumsq, a.images) == (b.exact_sum, b.exact_sumsq, b.images)
        np.testing.assert_array_equal(a.histogram, b.histogram)
    without = prep.compute_stats(root, workers=0, shard="0/3")  # a part without classes: merged without them
    assert prep.merge_stats([without, *paths[1:]]).classes is None


def test_sources_without_classes_are_refused_in_one_line(tmp_path, mnist_root, classes):
    root, _ = mnist_root
    with pytest.raises(OptionError, match=r"per_class .* a mnist source has no classes") as info:
        prep.compute_stats("mnist", root=root, per_class=True)
    assert "\n" not in str(info.value)
    array = tmp_path / "x.npy"
    np.save(array, np.zeros((2, 6, 5, 3), np.uint8))
    with pytest.raises(OptionError, match="a npy source has no classes"):
        prep.compute_stats(array, per_class=True)
    folder, _ = classes
    (folder / "stray.png").write_bytes((folder / "cats" / "cats0.png").read_bytes())
    with pytest.raises(OptionError, match=r"stray\.png lie outside every class folder"):
        prep.compute_stats(folder, per_class=True, workers=0)


def test_an_up_to_date_file_without_classes_is_measured_again(classes, tmp_path):
    root, _ = classes
    out = tmp_path / "s.json"
    _, reused = prep.load_or_compute(out, root, workers=0)
    stats, reused = prep.load_or_compute(out, root, workers=0, per_class=True)
    assert not reused and stats.classes is not None
    again, reused = prep.load_or_compute(out, root, workers=0)  # a file with classes serves a run without
    assert reused and again.per_class is not None
    assert set(CLASS_LEVELS) == set(again.per_class)
