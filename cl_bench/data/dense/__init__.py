"""Dense-prediction datasets: VOC / COCO / Cityscapes readers and their registrations, the in-memory views."""
