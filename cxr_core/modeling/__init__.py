"""Architectures, training, inference, ensembles, operating points, metrics, evaluation and verified model bundles."""
