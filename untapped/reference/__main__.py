"""``python -m untapped.reference``: the command line of :mod:`untapped.reference.cli`."""

from untapped.reference.cli import main

main()
