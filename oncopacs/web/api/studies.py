"""/api routes (studies)."""
