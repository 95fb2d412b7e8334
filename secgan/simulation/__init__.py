"""In-process federations: the runner (every simulated site in one process) and the 1-D Gaussian
mixture toy."""
