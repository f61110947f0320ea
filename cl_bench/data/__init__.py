"""Datasets in their real on-disk formats, and embedded generators (registered as ``dataset``)."""
