"""mypyc builds of the call plan, its nodes, the outgoing decision and its fraud checks (setup.py),
preferred by `sipcore.speedups.compiled_first` when the group matches its sources. Nothing here is
written by hand but this file."""
