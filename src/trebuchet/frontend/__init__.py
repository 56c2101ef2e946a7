"""Frontend: the torch.compile backend and the decomposition table."""
