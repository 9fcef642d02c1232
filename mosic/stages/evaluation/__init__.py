"""Dense evaluation: in-context retrieval (Hummingbird), linear segmentation, overclustering,
unsupervised video object segmentation."""
