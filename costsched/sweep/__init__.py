"""Sweeps over how to train (precision, compression, workers, batch, LR) against dollars."""
