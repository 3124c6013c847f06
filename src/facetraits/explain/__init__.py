"""Post-hoc explanations: which pixels drive each predicted impression, and how far to trust each map."""
