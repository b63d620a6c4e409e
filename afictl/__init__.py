"""afictl: train, profile and analyse Attentive Feature Integration networks (AFI-Nets)."""

__version__ = "0.1.0"
