"""``python -m prokd`` runs the command line."""

from prokd.cli import app

app()
