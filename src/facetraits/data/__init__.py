"""Data: sources, preparation, and the training data module."""
