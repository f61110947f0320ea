"""Image-encoder archs (torchvision, timm, small ResNets, scattering) and their compositions."""
