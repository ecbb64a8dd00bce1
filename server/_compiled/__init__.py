"""mypyc builds of the server's message loop, proxy adapter and registrar adapter (setup.py), preferred by
`sipcore.speedups.compiled_first` when the group matches its sources. Nothing here is written by hand
but this file."""
