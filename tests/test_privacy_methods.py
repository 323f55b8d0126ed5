"""DP-FedAvg and secure aggregation as methods of a run: one compiled round, the accountant's epsilon in the
summary, secure aggregation equal to the plain sum up to quantisation, and masked payloads in the ledger."""

import os
import sys

import chex
import dp_accounting
import numpy as np
import pytest

from fedtransfer_jax.runs import inference, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("privacy")
    config = grains.get_config("tiny")
    config.methods = ("fedavg", "fedavg_secagg", "dp_fedavg")
    config.figures = False
    config.data.tfds_dir = str(workdir / "tfds")
    config.method_specs.dp_fedavg.aggregator.noise_multiplier = 2.0
    # SGD: Adam turns a 1e-9 quantisation difference on a near-zero gradient into a full lr-sized step.
    config.fl.client_optimizer, config.fl.client_lr = "sgd", 0.05
    # What is compared is the aggregation. With augmentation on (the default) the same quantisation
    # differences grew to 1.7e-6 after two rounds (measured), just past the tolerance below; off, the two
    # runs train on identical batches through fewer nonlinear ops and stay within it.
    config.augment.enabled = False
    summary = train.train_and_evaluate(config, str(workdir / "w"))
    return str(workdir / "w"), config, summary


def test_every_privacy_method_compiles_its_round_once(run):
    _, _, summary = run
    for m in ("fedavg", "fedavg_secagg", "dp_fedavg"):
        assert summary["methods"][m]["round_compilations"] == 1, m


def test_secure_aggregation_equals_the_plain_sum_up_to_quantisation(run):
    workdir, _, summary = run
    plain = inference.load_model(workdir, "fedavg").params
    secure = inference.load_model(workdir, "fedavg_secagg").params
    # 32-bit fixed point with 2 clients per round: steps of ~2^-30 of the range, over two rounds.
    chex.assert_trees_all_close(secure, plain, atol=1e-6)
    ledger = summary["methods"]["fedavg_secagg"]["privacy_ledger"]
    dtypes = {t["dtype"] for t in ledger["tensors"]["model_update"]}
    assert dtypes == {"uint32"}  # the server only ever saw masked integers
    assert ledger["image_shaped_arrays_sent"] is False


def test_dp_epsilon_is_the_accountants(run):
    _, config, summary = run
    dp = summary["methods"]["dp_fedavg"]["differential_privacy"]
    k, n, rounds = config.fl.clients_per_round, 4, config.fl.rounds
    assert (dp["sampling"], dp["rounds"], dp["noise_multiplier"]) == ("fixed", rounds, 2.0)
    # Independently: fixed-size sampling of k of n clients without replacement; replace-one neighbours change
    # the clipped sum by up to 2C, so noise z*C is a Gaussian mechanism with multiplier z / 2.
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(n, k, dp_accounting.GaussianDpEvent(2.0 / 2))
    acc.compose(event, rounds)
    np.testing.assert_allclose(dp["epsilon"], acc.get_epsilon(1e-5), rtol=1e-6)
    assert dp["epsilon_per_round_cumulative"][-1] == dp["epsilon"]
    # Without amplification (the server knows who was sampled): T compositions of a Gaussian with z = 2.
    plain = dp_accounting.rdp.RdpAccountant()
    plain.compose(dp_accounting.GaussianDpEvent(2.0), rounds)
    np.testing.assert_allclose(dp["epsilon_without_sampling_amplification"], plain.get_epsilon(1e-5), rtol=1e-6)
    assert np.all(np.diff(dp["epsilon_per_round_cumulative"]) > 0)
