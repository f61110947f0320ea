"""Text-encoder objectives and their trainer."""
