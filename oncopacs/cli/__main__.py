"""``python -m oncopacs.cli``: the same command line as the ``oncopacs`` script."""

from oncopacs.cli.main import main

main()
