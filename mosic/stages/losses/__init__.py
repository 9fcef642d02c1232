"""Losses: Sinkhorn-Knopp assignments and the trajectory clustering loss, a file each."""
