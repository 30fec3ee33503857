"""Measurement of bundles: metrics, bootstrap intervals, evaluation tables, calibration and
operating-point fitting on validation, comparisons, plots, model cards and explanation
localisation. Sits above `modeling` and `explain`, below `review`."""
