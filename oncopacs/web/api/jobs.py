"""/api routes (jobs)."""
