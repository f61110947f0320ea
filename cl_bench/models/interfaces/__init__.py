"""Every model interface (image encoder, text encoder, image-text, causal LM, sequence model) and the declared hooks."""
