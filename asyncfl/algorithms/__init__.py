"""Client rules and server updates as pure torch.func functions. No simpy here."""
