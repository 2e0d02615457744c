"""ospo: object-centric self-improving preference optimisation for unified multimodal models."""

__version__ = "0.1.0"
