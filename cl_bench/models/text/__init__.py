"""Text-encoder archs (Hugging Face, sentence-transformers, the tiny BERT)."""
