"""Models: backbones, heads, the LightningModule, losses and metrics."""
