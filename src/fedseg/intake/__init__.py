"""Clinic intake: DICOM to de-identified NIfTI, the harmonized BraTS preprocessing, PACS access.

Imports only ``fedseg.data`` and ``fedseg.errors``; the field libraries (pydicom, SimpleITK,
pynetdicom) are the ``intake`` extra and are imported by the modules that need them.
"""
