"""The benchmark (make bench, scripts/bench.py): served throughput and latency against the
in-process limit and a Flask baseline.

load.py drives concurrent clients and times them; limit.py measures the in-process limit;
systems.py starts the systems under test (TorchServe, Flask) and builds their inputs; report.py
holds the targets and writes the Markdown and JSON; runs.py puts them together.
"""
