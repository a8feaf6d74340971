"""Data: sources (cifar10, folder, npz), in-memory data sets, preprocessing and augmentation."""
