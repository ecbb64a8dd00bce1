"""mypyc builds of the registrar and its lanes (setup.py), preferred by
`sipcore.speedups.compiled_first` when the group matches its sources. Nothing here is written by hand
but this file."""
