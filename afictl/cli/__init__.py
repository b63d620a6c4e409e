"""The ``afictl`` command line: one thin module per command over library functions."""
