"""Users, roles, passwords, second factors and API tokens (no Flask here)."""
