"""Ingest: find series in a DICOM export and read them with exact geometry."""

__all__: list[str] = []
