"""Baselines a model is judged against: the human noise ceiling and the paper's hand-crafted features."""
