"""Dense-prediction metrics: VOC AP (detectron2 semantics), COCO AP (pycocotools), mIoU (mmseg semantics)."""
