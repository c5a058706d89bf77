"""/api routes (audit)."""
