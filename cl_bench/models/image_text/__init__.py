"""Image-text archs (open_clip, Hugging Face CLIP, ALBEF towers, VLM embedders, the scene CLIP)."""
