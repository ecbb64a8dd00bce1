"""mypyc builds of sipcore's per-message modules (setup.py), preferred by
`sipcore.speedups.compiled_first` when they match their sources. Nothing here is written by hand but
this file."""
