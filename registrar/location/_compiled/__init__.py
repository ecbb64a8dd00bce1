"""mypyc builds of the location store's memory backend, its rules, its replication and its codec
(setup.py), preferred by `sipcore.speedups.compiled_first` when the group matches its sources.
Nothing here is written by hand but this file."""
