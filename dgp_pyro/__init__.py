"""dgp-pyro: semi-supervised animal pose tracking with Deep Graph Pose in Pyro, in 2D and 3D."""

__version__ = "0.1.0"
