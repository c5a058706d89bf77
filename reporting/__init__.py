"""Reports: report model -> HTML -> PDF, and delivery over HL7 v2, FHIR and DICOM."""
