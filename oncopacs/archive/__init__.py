"""The archive: durable storage of instance files, the one ingest path, and integrity checks."""
