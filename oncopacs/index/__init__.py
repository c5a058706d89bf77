"""The index: SQLAlchemy models, database access, and query matching."""
