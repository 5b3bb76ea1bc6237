"""A TorchServe on this machine (`make run`, tests, benchmarks): start it behind its doors, wait,
warm up, stop; the UI beside it."""
