"""Data: synthetic labs, real-folder reader, tiling, tfds builders and padded federated client arrays.

Importing this package stays light: tensorflow-datasets is only imported when a builder is needed.
"""

from fedtransfer_jax.data.clients import ClientData, FederatedData, load_federated_data, pad_clients
from fedtransfer_jax.data.folder import read_image, read_label
from fedtransfer_jax.data import labs  # registers the labs of data/labs/ with the built-in ones

__all__ = ["ClientData", "FederatedData", "labs", "load_federated_data", "pad_clients", "read_image", "read_label"]
