"""mypyc builds of sipcore's per-message modules, the group's shared runtime and its record
(setup.py), preferred by `sipcore.speedups.compiled_first` when the whole group matches its sources.
Nothing here is written by hand but this file."""
