"""/api routes (patients)."""
