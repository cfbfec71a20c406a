"""The data layer: corpus, community file layouts and readers, synthetic data, device tensors."""
