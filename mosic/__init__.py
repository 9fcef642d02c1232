"""mosic: MoSiC (optimal-transport motion trajectories) for dense self-supervised learning."""

__version__ = "0.1.0"
