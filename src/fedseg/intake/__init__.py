"""Clinic intake: DICOM to de-identified NIfTI, the harmonized BraTS preprocessing, PACS access,
and results back to the PACS as DICOM SEG (through the site's private ``linkage``).

Imports only ``fedseg.data`` and ``fedseg.errors``; the field libraries (pydicom, SimpleITK,
pynetdicom, highdicom) are the ``intake`` extra and are imported by the modules that need them.
"""
