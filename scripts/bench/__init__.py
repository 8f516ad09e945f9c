"""The measurements behind scripts/benchmark.py (rnnlab against plain PyTorch and the tutorial)."""
