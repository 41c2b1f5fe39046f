"""Diagnosis of a run and of a model: learning curves, inspect (layers, FLOPs, receptive fields), pictures."""
