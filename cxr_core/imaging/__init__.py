"""From a file to a lung crop: loading, resizing, lung segmentation, post-processing, the one preprocessing path, augmentation."""
