"""rnnlab's Hydra sweeper on current Optuna: search, pruning, resume and failure tolerance."""
