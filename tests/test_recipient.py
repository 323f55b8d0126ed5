"""The data-poor recipient lab (data.recipient, data/clients.apply_recipient, runs/style_protocol): it holds exactly
k labelled tiles; at k = 0 it is no segmentation client, yet its style message (from its unlabelled images,
gen's fit on classical pseudo-labels) crosses the boundary and reaches the bank; no image-shaped array leaves
it; bad keys raise ValueError naming the key."""

import types

import jax
import numpy as np
import pytest

from experiments import data_poor
from fedtransfer_jax.data import clients as clients_lib
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.runs import style_protocol
from fedtransfer_jax.style import techniques


def tiny_data_config(k, n=4, recipient="lowcontrast"):
    config = data_poor.get_config(f"{k},tiny")
    config.data.recipient, config.data.recipient_labels, config.data.recipient_unlabelled = recipient, k, n
    return config


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("recipient_tfds"))


def load(config, tfds_dir):
    config.data.tfds_dir = tfds_dir
    return clients_lib.load_federated_data(config.data, tfds_dir)


@pytest.mark.parametrize("k", [4, 1, 0])
def test_the_recipient_holds_exactly_k_labelled_tiles(k, tfds_dir):
    data = load(tiny_data_config(k), tfds_dir)
    assert data.recipient == "lowcontrast"
    counts = dict(zip(data.client_names, np.asarray(data.train.num_examples).tolist()))
    assert data.unlabelled["lowcontrast"].shape[0] == 4
    assert "lowcontrast" not in data.val  # no validation labels beyond its k
    if k == 0:
        assert "lowcontrast" not in data.client_names and "lowcontrast" in data.unseen
        assert "lowcontrast" not in data.test
        assert counts == {"brightfield": 8, "darkfield": 8, "sem": 8}
    else:
        assert counts["lowcontrast"] == k and counts["sem"] == 8
        # Labelled and unlabelled tiles are disjoint tiles of its training split.
        real = np.asarray(data.train.images[data.client_names.index("lowcontrast")])[:k]
        for u in data.unlabelled["lowcontrast"]:
            assert not any(np.array_equal(np.asarray(u, np.float32), np.asarray(r, np.float32)) for r in real)
    with pytest.raises(KeyError):
        data.unlabelled["sem"]


@pytest.mark.parametrize("technique", ["gen", "adain"])
def test_at_k0_the_style_message_crosses_the_boundary_and_reaches_the_others(technique, tfds_dir):
    data = load(tiny_data_config(0), tfds_dir)
    names = style_protocol.style_client_names(data)
    assert names == ("brightfield", "darkfield", "sem", "lowcontrast")
    ledger = boundary_lib.PrivacyLedger(image_hw=tuple(data.train.images.shape[2:4]), client_names=names)
    config = types.SimpleNamespace(style=types.SimpleNamespace(styles_per_client=8), seed=0)
    ctx = types.SimpleNamespace(data=data, config=config)
    method = techniques.get_technique(technique, {"features": (8, 16)})
    shared = method.init_shared(jax.random.PRNGKey(0), int(data.train.images.shape[2]))
    bank = style_protocol.share_styles(ctx, method, shared, ledger)
    assert np.asarray(bank.valid).shape[0] == 4  # the segmentation clients + the recipient's row
    assert int(np.asarray(bank.valid[3]).sum()) == 4  # its 4 unlabelled images' styles
    summary = ledger.summary()
    assert summary["bytes_sent_per_client"]["lowcontrast"] == ledger.bytes_per_send("style_stats") > 0
    assert not summary["image_shaped_arrays_sent"] and not summary["flagged_tensors"]
    # gen's fit read pseudo-labels, not labels: boundary maps from the classical segmenter, not empty.
    sample = style_protocol.recipient_style_data(data)
    assert sample["images"].shape[0] == 4 and 0 < sample["labels"].mean() < 0.5
    # A foreign draw of the other clients can land on the recipient's style.
    targets, has = techniques.draw_targets(bank.valid, np.int32(0), 256, jax.random.PRNGKey(0))
    assert bool(has) and 3 in set(np.asarray(targets).tolist())


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"recipient": "tint"}, "data.recipient"),
        ({"recipient_labels": -1}, "data.recipient_labels"),
        ({"recipient_unlabelled": -2}, "data.recipient_unlabelled"),
        ({"recipient_labels": 0, "recipient_unlabelled": 0}, "data.recipient_unlabelled"),
        ({"recipient_labels": 6, "recipient_unlabelled": 4}, "data.recipient_labels"),
        ({"recipient": "", "recipient_labels": 2}, "data.recipient_labels"),
    ],
)
def test_bad_recipient_keys_name_the_key(keys, match):
    config = tiny_data_config(1)
    for key, value in keys.items():
        config.data[key] = value
    with pytest.raises(ValueError, match=match):
        clients_lib.check_recipient(config.data, tuple(config.data.clients))
