"""TLS for every listener and outgoing link: the configured PEM files, checked once, their SSL
contexts, and trial certificates (``oncopacs tls selfsigned``)."""

from oncopacs.tls.contexts import MINIMUM_VERSION, TlsFiles, describe_tls_error

__all__ = ["MINIMUM_VERSION", "TlsFiles", "describe_tls_error"]
