"""cnnkit: from a folder of labelled images to an evaluated, deployable CNN classifier."""

__version__ = "0.1.0"
