"""How far to trust a map: faithfulness to the model, sensitivity to its weights, agreement with ground truth."""
