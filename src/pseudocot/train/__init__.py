"""Training components shared by the training stages."""
