"""Synthetic data, the model, the training loop, the P-NE logger and the scores."""
