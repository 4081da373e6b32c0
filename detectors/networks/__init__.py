"""Export-safe plain-torch networks shared by the detectors (see ``layers.py`` for the rules)."""
