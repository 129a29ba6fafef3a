"""``python -m siprecd.ctl`` runs siprecctl (the console script is the usual way)."""

from siprecd.ctl.main import run

run()
