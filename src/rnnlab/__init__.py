"""rnnlab: an experiment framework for recurrent sequence models."""

__version__ = "0.1.0"
