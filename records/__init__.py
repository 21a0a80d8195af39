"""Patients' records as FHIR R4 resources and their store.

Not built yet: the records issue adds them.
"""
