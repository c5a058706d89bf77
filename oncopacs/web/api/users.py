"""/api routes (users)."""
