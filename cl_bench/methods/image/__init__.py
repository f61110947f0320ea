"""Image objectives (SimCLR family, BYOL, MCL, SepCLR, PixPro, ...) and image augmentations."""
