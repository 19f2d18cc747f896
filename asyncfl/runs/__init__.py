"""Wiring one scenario into a run: the runner, the run directory, checkpoints, the resource guard
and the benchmark that times whole runs."""
