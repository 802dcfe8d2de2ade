"""EHR input: FHIR R4 records and CDS Hooks prefetch converted to patient states."""
