"""Studies over run directories: sweeps, tidy results, figures and reports. Reads run directories
(and starts runs through :mod:`asyncfl.runs`); never imports the simulator's or executor's internals."""
