"""Training objectives of the seed papers (registered as ``objective``), one trainer, augmentations."""
