"""Lightning callbacks that draw or write what a run shows for review in TensorBoard."""
