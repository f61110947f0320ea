"""Checkpoint readers, released layouts, weight fingerprints, the unpickling policy."""
