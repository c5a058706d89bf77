"""The image viewer's server side: scenes loaded from the archive and the slice PNG route."""
