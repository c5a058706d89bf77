"""The EHR's side of OncoPACS: HL7 v2 messages in (ADT updates and merges, orders, appointments) and what they do
to the archive (demographics, the modality worklist, prefetch). Reports going out live in :mod:`reporting`."""

__all__ = ["messages"]
