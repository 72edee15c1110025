"""Transforms built from measured statistics (normalize, min-max, per-image, whitening) and the
transforms applied to images before they are measured."""
