"""The five source notebooks' printed numbers, recomputed with rnnlab (scripts/seeds.py)."""
