"""Neural posterior estimation: amortized posteriors of Pyro simulators (see docs/npe.md)."""
