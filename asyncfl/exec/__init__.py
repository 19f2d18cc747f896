"""The only bridge between the simulator and the numerics: the lazy batched executor, the torch
backend the engine calls, the reference-counted model version store and the on-device random
streams. Imports torch and the algorithms, never simpy."""
