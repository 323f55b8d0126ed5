"""fedtransfer_jax: federated grain-boundary segmentation with style sharing (FedTransfer) in JAX."""

__version__ = "0.1.0"
