"""batch_training package."""
