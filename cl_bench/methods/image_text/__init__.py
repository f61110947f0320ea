"""Image-text objectives and their trainer."""
