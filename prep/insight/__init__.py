"""What prep shows a person: the summary table, per-image reports, check/compare, published
constants, exports, plots."""
