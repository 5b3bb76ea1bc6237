"""The benchmark (make bench, scripts/bench.py) and the soak (make soak, scripts/soak.py).

load.py drives concurrent clients and times them; limit.py measures the in-process limit; ceiling.py
TorchServe's own ceiling with a fixed-cost handler; systems.py and peers.py start the systems under
test (TorchServe, Flask, LitServe); targets.py holds the targets; report.py writes the Markdown and
JSON; profile.py the breakdown of a request; runs.py puts them together; soak.py is the overload soak
and stats.py the percentiles they share.
"""
