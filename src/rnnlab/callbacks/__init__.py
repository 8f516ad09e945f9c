"""Lightning callbacks that draw or write what a run shows in TensorBoard."""
