"""OHIF, the web viewer clinicians know, installed from its published build and configured for OncoPACS."""
