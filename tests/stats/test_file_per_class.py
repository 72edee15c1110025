"""prep.stats.file with per_class: the ``classes`` and ``per_class`` fields round trip, each class
is a Stats of its own, files without them load unchanged, and an edited class is refused in one
line naming its field."""

from __future__ import annotations

import dataclasses
import json

import pytest

import prep
from helpers import make_class_folder
from helpers.errors import refused
from helpers.stats_files import put
from prep.errors import MismatchError, OptionError

pytestmark = pytest.mark.filterwarnings("ignore::prep.PrepWarning")


@pytest.fixture(scope="module")
def per_class_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    make_class_folder(root / "pets")
    stats = prep.compute_stats(root / "pets", per_class=True, workers=0)
    path = root / "pets.json"
    stats.save(path)
    return stats, path


def test_classes_round_trip_and_each_class_is_a_stats(per_class_file):
    stats, path = per_class_file
    data = json.loads(path.read_text())
    assert data["classes"] == ["birds", "cats", "dogs", "night", "zebras"]
    assert list(data["per_class"]) == ["birds", "cats", "dogs", "night"]
    assert set(data["per_class"]["night"]) == {"images", "count", "mean", "std", "min", "max", "state"}
    loaded = prep.load_stats(path)
    assert loaded.classes == stats.classes and loaded.class_states == stats.class_states
    night = loaded.per_class["night"]
    assert night.mean == stats.class_stats("night").mean and night.images == data["per_class"]["night"]["images"]
    assert data["per_class"]["night"]["mean"] == list(night.mean)
    assert night.source["class"] == "night" and night.mode == loaded.mode
    assert max(night.mean) < 0.2 < min(loaded.per_class["cats"].mean)
    assert night.normalize_line().startswith("transforms.Normalize(")


def test_unknown_and_empty_classes_are_one_line_errors_naming_known_ones(per_class_file):
    stats, _ = per_class_file
    with pytest.raises(OptionError, match=r"^no class 'cow'; the classes are birds, cats, dogs, night, zebras$"):
        stats.class_stats("cow")
    with pytest.raises(OptionError, match="class 'zebras' has no measured image"):
        stats.class_stats("zebras")
    plain = prep.Stats(source=stats.source, fingerprint=None, mode=stats.mode, state=stats.state)
    assert plain.per_class is None and plain.classes is None
    with pytest.raises(OptionError, match="measured without --per-class"):
        plain.class_stats("cats")


def test_a_file_without_classes_loads_and_writes_as_before(per_class_file, tmp_path):
    _, path = per_class_file
    data = json.loads(path.read_text())
    del data["classes"], data["per_class"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    loaded = prep.load_stats(old)
    assert loaded.classes is None and loaded.per_class is None
    assert "classes" not in loaded.to_dict() and "per_class" not in loaded.to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        (put("per_class", "night", "mean", value=[0.5, 0.5, 0.5]), r"field 'per_class\.night\.mean': does not match"),
        (put("per_class", "night", "images", value=1), r"field 'per_class\.night\.images': does not match"),
        (put("per_class", "cow", value={}), r"field 'per_class\.cow': not one of 'classes'"),
        (put("classes", value=["a", "a"]), "field 'classes': expected unique folder names"),
        (put("per_class", "night", "extra", value=1), r"field 'per_class\.night\.extra': unknown field"),
        (lambda d: d.pop("per_class"), "missing field 'per_class'"),
        (lambda d: d["per_class"].pop("night"), "the classes' images do not add up to the whole state's"),
        (
            lambda d: d["per_class"]["night"]["state"].update(count=[1, 1, 1]),
            r"per_class\.night\.state",
        ),
    ],
)
def test_edited_classes_are_refused_naming_the_field(per_class_file, tmp_path, change, message):
    _, path = per_class_file
    data = json.loads(path.read_text())
    change(data)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    refused(edited, message)


def test_merge_refuses_parts_with_other_classes(tmp_path):
    make_class_folder(tmp_path / "pets")
    parts = [prep.compute_stats(tmp_path / "pets", per_class=True, workers=0, shard=f"{i}/2") for i in range(2)]
    other = dataclasses.replace(parts[1], classes=("birds", "cats", "dogs", "night"))
    with pytest.raises(MismatchError, match="its classes differ"):
        prep.merge_stats([parts[0], other])
