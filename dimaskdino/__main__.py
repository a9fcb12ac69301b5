"""``python -m dimaskdino`` runs the ``dimask`` command line."""

from dimaskdino.cli import main

main()
