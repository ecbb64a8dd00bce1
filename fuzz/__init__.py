"""Coverage-guided fuzzing of everything that reads bytes from the network or the operator.

One module per target (``target_*.py``), each with ``check(data)``: it feeds the bytes to the code
under test and raises on a bug (an exception other than the documented error type, or a
disagreement between a C reader and its Python reference); ``seeds()`` gives its starting corpus.
``python -m fuzz.run`` runs targets under atheris (libFuzzer) for a bounded time: ``make fuzz``.
"""
