"""Dash applications mounted on the OncoPACS Flask server."""
