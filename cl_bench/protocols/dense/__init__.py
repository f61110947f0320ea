"""Machinery of the dense protocols: detectors, segmentation heads, schedules, PreciseBN."""
