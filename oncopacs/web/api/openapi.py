"""/api routes (openapi)."""
