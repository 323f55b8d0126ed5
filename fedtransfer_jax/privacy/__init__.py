"""Privacy for the federated round: DP-FedAvg (`dp`), secure aggregation (`secagg`), privacy accounting
(`accounting`, needs the dp-accounting package) and a reference driver of one aggregation step (`simulate`).

`privacy.audit` (command line: `python -m fedtransfer_jax.audit`) attacks what an honest-but-curious server
sees, with and without these defences; it is not imported here (it pulls in the style techniques).
"""

from fedtransfer_jax.privacy.dp import DPState, dp_fedavg, effective_noise_multiplier, split_noise_multiplier
from fedtransfer_jax.privacy.secagg import secure_sum

__all__ = ["DPState", "dp_fedavg", "effective_noise_multiplier", "secure_sum", "split_noise_multiplier"]
