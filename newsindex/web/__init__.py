"""The web layer: `newsindex serve` (app.py), its templates and static files."""
