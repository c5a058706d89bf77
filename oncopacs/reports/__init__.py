"""Report records in the index: versions, their approval workflow and their deliveries (HL7, FHIR)."""
