"""The embedded procedural world and its writers (VOC / COCO / Cityscapes / MMEB / MMVP trees, captions)."""
