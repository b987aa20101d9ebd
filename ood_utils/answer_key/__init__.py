"""The answer key: the self-checks of every exercise (``checks``, one module per notebook), the
registry of the reference each check compares with, the expected values, and the static screen
that warns a student who calls a reference. Imports the course and methods wings only."""
