"""costsched: cost-aware elastic scheduling and training on Ray."""

__version__ = "0.1.0"
