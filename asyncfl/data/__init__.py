"""Federated data sets and partitions, resident on one device."""
