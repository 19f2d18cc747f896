"""Networks written for torch.func (functional_call over a flat parameter vector)."""
