"""Manifold explanations in numbers: maps of faces, how faithful and readable they are, attribute correlations."""
