"""Discrete-event simulation (SimPy): time, clients, network, server scheduling. No torch here."""
