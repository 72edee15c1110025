"""Damaged stats files raise StatsFileError naming the field; the CLI recomputes over them."""

import contextlib
import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prep
from helpers import make_mnist, mutate, run
from prep.errors import SourceError, StatsFileError

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


def test_source_errors_are_prep_errors():
    assert issubclass(SourceError, prep.PrepError) and issubclass(StatsFileError, prep.PrepError)
