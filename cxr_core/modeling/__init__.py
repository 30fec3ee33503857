"""Architectures, training, inference, ensembles, thresholds, calibration and verified model bundles."""
