"""The SVG charts prep draws itself (prep.insight.svg_charts): what prep plot marks, on a linear and a
log axis, and labels that stay text."""

from __future__ import annotations

import re

import numpy as np

from prep.insight.svg_charts import Series, distribution_chart, histogram_chart, log_decades


def _series(label="a", colour="#1f77b4", fractions=True, **marks):
    counts = np.arange(256, dtype=np.float64) % 7
    values = {"mean": 0.4, "std": 0.2, "minimum": 0.0, "maximum": 0.9, "percentiles": [(5.0, 0.05), (95.0, 0.85)]}
    values.update(marks)
    return Series(label, colour, counts / counts.sum() if fractions else None, **values)


def test_one_chart_holds_each_series_twice_and_its_marks_once():
    chart = histogram_chart("R", [_series(), _series("b", "#ff7f0e")])
    assert chart.startswith('<svg class="chart histogram"') and chart.endswith("</svg>")
    assert 'data-channel="R" data-series="2"' in chart
    linear, log = chart.split('<g class="scale-linear">')[1].split('<g class="scale-log">')
    for group in (linear, log.split("</g>")[0]):
        assert group.count('class="series" data-file="0"') == group.count('class="series" data-file="1"') == 1
    for row in ("0", "1"):
        assert chart.count(f'class="mark mark-mean" data-file="{row}"') == 1
        assert chart.count(f'class="mark mark-std" data-file="{row}"') == 2
        assert chart.count(f'class="mark mark-percentile" data-file="{row}"') == 2
        assert chart.count(f'class="mark mark-range" data-file="{row}"') == 1
    assert "fraction of pixels (log)" in chart and "value (unit scale)" in chart


def test_a_file_without_a_histogram_keeps_its_marks():
    chart = histogram_chart("L", [_series(fractions=False, minimum=-3.0, maximum=5.0, mean=1.0, std=2.0)])
    assert 'class="series"' not in chart and "summary marks only" in chart
    assert chart.count("mark-std") == 2 and "min..max -3.000000..5.000000" in chart
    ticks = [float(t) for t in re.findall(r'class="tick-label"[^>]*>([-0-9.]+)<', chart)]
    assert min(ticks) <= -2 and max(ticks) >= 4  # the axis spans the data's own range


def test_labels_are_escaped():
    chart = histogram_chart('"><b>', [_series('<script>alert(1)</script>&"')])
    assert "<script>" not in chart and "<b>" not in chart
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;" in chart
    assert 'data-channel="&quot;&gt;&lt;b&gt;"' in chart


def test_log_decades_span_every_positive_fraction():
    assert log_decades([np.array([0.5, 0.25, 0.0, 1e-4])]) == (-4, 0)
    assert log_decades([None, np.zeros(4)]) == (-3, 0)
    assert log_decades([np.array([1.0, 0.0])]) == (-1, 0)


def test_a_distribution_takes_in_its_marks():
    values = np.array([0.4, 0.5, 0.5, 0.6, np.nan])
    chart = distribution_chart(values, [(0.5, "mark-mean", "mean"), (1.5, "mark-threshold", "limit")], "t", "x")
    assert 'data-values="4"' in chart and chart.count('<line class="mark') == 2
    assert 'stroke-dasharray="5 3"' in chart  # the threshold
