"""The per-worker training loop and its pieces, independent of Ray."""
