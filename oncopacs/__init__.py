"""OncoPACS: an open, self-hosted PACS for radiation oncology and proton therapy."""

__version__ = "0.1.0"
