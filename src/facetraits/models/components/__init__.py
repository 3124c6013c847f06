"""Plain nn.Modules the LightningModule is assembled from."""
