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


def test_test_folder_links_exactly_the_held_out_micrographs(tmp_path):
    import numpy as np
    from PIL import Image

    lab = tmp_path / "lab"
    for sub in ("images", "labels"):
        (lab / sub).mkdir(parents=True)
    for g in range(10, 22):
        for i in range(2):
            for sub in ("images", "labels"):
                Image.fromarray(np.zeros((4, 4), np.uint8)).save(lab / sub / f"TrainDataset_{g}-{i}-0.png")
    out = few_labels.test_folder(str(lab), str(tmp_path / "tests"))
    cfg = tb.FolderConfig(name="t", group_regex=r"_(\d+)-", test_fraction=0.25, seed=0, val_fraction=0.2)
    pairs = [(p, lab / "labels" / p.name) for p in sorted(lab.glob("images/*"))]
    held_out = {p[0].name for p in tb.folder_splits(pairs, cfg, "tbm")["test"]}
    assert {p.name for p in (Path(out) / "images").iterdir()} == held_out == {p.name for p in (Path(out) / "labels").iterdir()}
    assert len(group_set([(Path(n),) for n in held_out])) == 3  # 25 % of 12 micrographs


def test_aggregate_pairs_models_crop_by_crop():
    import numpy as np

    crops = [f"c{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 6)

    def scores(shift):
        return {"ari": dict(zip(crops, base + shift + rng.normal(0, 0.01, 6))),
                "boundary_f1": dict(zip(crops, base)), "ari_raw": dict(zip(crops, base)),
                "intercept_rel_error": {"1": 0.1, "2": 0.3}}

    s = {"k0": {"auto": scores(0.0)}, "k2_local": {"auto": scores(0.05)}, "k2_fedavg": {"auto": scores(0.1)}}
    study = few_labels.aggregate(s)
    c = study["comparisons"]["k2_fedavg vs k2_local @ auto"]["ari"]
    d = np.array([s["k2_fedavg"]["auto"]["ari"][n] - s["k2_local"]["auto"]["ari"][n] for n in crops])
    assert c["n"] == 6 and abs(c["diff_mean"] - d.mean()) < 1e-12 and c["p"] < 0.01
    assert set(study["comparisons"]) == {"k2_fedavg vs k2_local @ auto", "k2_local vs k0 @ auto", "k2_fedavg vs k0 @ auto"}
    assert abs(study["models"]["k0"]["auto"]["intercept_rel_error"]["mean"] - 0.2) < 1e-12
    assert study["models"]["k0"]["auto"]["intercept_rel_error_max"] == 0.3
    assert "k2_fedavg vs k2_local @ auto" in few_labels.markdown(study)
    s["k2_local"]["auto"]["ari"].pop("c0")
    with pytest.raises(ValueError, match="different crops"):
        few_labels.aggregate(s)


def test_one_micrograph_alone_may_repeat_tiles_in_a_batch():
    config = few_labels.get_config("1,local,cpu")
    engine.check_batch_size(config, {"tbm_tint_etched": 3})  # 3 tiles, batch 8: meant
    config.fl.allow_batch_repeats = False
    with pytest.raises(ValueError, match="allow_batch_repeats"):
        engine.check_batch_size(config, {"tbm_tint_etched": 3})


def test_driver_names_a_bad_flag(tmp_path, capsys):
    assert few_labels.main(["--workdir", str(tmp_path), "--init_from", str(tmp_path / "none")]) == 2
    assert "--init_from" in capsys.readouterr().err
    assert few_labels.main(["--workdir", str(tmp_path), "--init_from", str(tmp_path), "--labels", "3"]) == 2
