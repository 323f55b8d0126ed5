"""A few-label real lab (data.train_groups, experiments/few_labels.py): only k training micrographs are kept,
drawn with the split's seed and nested in k; the validation and test micrographs never change with k."""

from pathlib import Path

import pytest

from experiments import few_labels
from fedtransfer_jax.data import clients
from fedtransfer_jax.data import tfds_builders as tb
from fedtransfer_jax.runs import engine


def pairs(groups=12, crops=3):
    return [
        (Path(f"images/TrainDataset_{g}-{i}-0.png"), Path(f"labels/TrainDataset_{g}-{i}-0.png"))
        for g in range(groups)
        for i in range(crops)
    ]


def group_set(split):
    return {p[0].name.split("_")[1].split("-")[0] for p in split}


def splits(k):
    cfg = tb.FolderConfig(name="t", group_regex=r"_(\d+)-", test_fraction=0.25, seed=3, val_fraction=0.2, train_groups=k)
    return tb.folder_splits(pairs(), cfg, "tbm")


def test_train_groups_keeps_k_micrographs_nested_and_leaves_val_and_test_alone():
    full = splits(0)
    kept = {k: splits(k) for k in (1, 2, 5)}
    for k, s in kept.items():
        assert s["test"] == full["test"] and s["val"] == full["val"]
        assert len(group_set(s["train"])) == k and group_set(s["train"]) <= group_set(full["train"])
        assert len(s["train"]) == 3 * k  # every crop of a kept micrograph
    assert group_set(kept[1]["train"]) <= group_set(kept[2]["train"]) <= group_set(kept[5]["train"])
    assert tb.FolderConfig(name="t").params().keys() == tb.FolderConfig(name="t", train_groups=0).params().keys()
    assert "train_groups" in tb.FolderConfig(name="t", train_groups=2).params()  # a new cache only when used


def test_negative_train_groups_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.train_groups"):
        clients.builder_config_from(dict(source="folder", dir=str(tmp_path), train_groups=-1))


@pytest.mark.parametrize("variant", ["1", "2,scratch", "5", "1,tiny"])
def test_configs_are_valid(variant):
    config = few_labels.get_config(variant)
    engine.validate_config(config)
    assert config.data.train_groups == int(variant.split(",")[0])
    assert config.data.clients[0] == "tbm_tint_etched" and len(config.data.clients) > 1
    # never the shipped model: it trained on this lab's every training micrograph
    assert config.init_from == (few_labels.SYNTHETIC_MODEL if variant in ("1", "5") else "")
    assert config.init_from != "shipped"


def test_cpu_variants_give_the_lab_the_same_steps_alone_or_federated():
    alone, federated = few_labels.get_config("2,local,cpu"), few_labels.get_config("2,fedavg,cpu")
    assert alone.data.clients == ("tbm_tint_etched",) and alone.methods == ("local",)
    assert federated.data.clients[0] == "tbm_tint_etched" and len(federated.data.clients) == 10
    assert federated.methods == ("fedavg",)
    for key in ("rounds", "local_steps", "batch_size"):
        assert alone.fl[key] == federated.fl[key]
    assert alone.init_from == federated.init_from == few_labels.SYNTHETIC_MODEL
    assert alone.data.train_groups == federated.data.train_groups == 2
    for config in (alone, federated):
        engine.validate_config(config)


@pytest.mark.parametrize("bad", [None, "", "3", "0", "two", "2,huge", "2,local,fedavg"])
def test_bad_variants(bad):
    with pytest.raises(ValueError, match="labelled micrographs"):
        few_labels.get_config(bad)
