"""/api routes (series)."""
