"""Background jobs: heavy work never runs inside a request or an association."""
