"""experiments/data_poor.py (docs/PROTOCOL.md v2, study c): a data-poor recipient lab with k = 0, 1, 2, 4 labelled
tiles federated with the other seen labs; the per-k comparisons (checked against scipy) with Holm over every k;
the tiny study end to end at k = 0 (the recipient trains nothing, its style still crosses the boundary)."""

import json
import os

import pytest
from scipy import stats as sp_stats

from experiments import data_poor
from fedtransfer_jax.runs import engine


@pytest.mark.parametrize("k", data_poor.LABELS)
def test_the_study_config_at_every_k(k):
    config = data_poor.get_config(str(k))
    engine.validate_config(config)
    assert config.data.clients == data_poor.SEEN and config.data.recipient == data_poor.RECIPIENT == "lowcontrast"
    assert config.data.recipient_labels == k and config.data.recipient_unlabelled == data_poor.UNLABELLED
    assert k + config.data.recipient_unlabelled <= config.data.train_per_client == 8
    assert config.fl.clients_per_round == 0 and config.data.unseen_clients == ()
    assert ("local" in config.methods) == (k > 0)
    assert {"fedavg", "fedtransfer", "fedtransfer_gen", "gen_own_style", "gen_random_style"} <= set(config.methods)
    assert config.eval.select == "best_val" and config.fl.lr_schedule == "cosine" and config.augment.enabled
    assert config.eval.whole_images == 4 and config.eval.whole_image_size == 256
    assert config.seeds == tuple(range(10)) and config.data_seeds == tuple(1000 + i for i in range(10))
    assert data_poor.get_config(f"{k},sem").data.recipient == "sem"


def test_session_variant_is_the_protocols():
    """docs/PROTOCOL.md "Study (c) in one session": k = 0, 1 (`session`) and k = 2, 4 (`session2`); seed pairs
    0-6; no local; the full budget."""
    for k, part in ((0, "session"), (1, "session"), (2, "session2"), (4, "session2")):
        config, full = data_poor.get_config(f"{k},{part}"), data_poor.get_config(str(k))
        assert config.name.endswith(f"-k{k}-{part}")
        assert tuple(config.methods) == ("fedavg", "fedtransfer", "fedtransfer_gen", "gen_own_style", "gen_random_style")
        assert tuple(config.seeds) == tuple(range(7)) and tuple(config.data_seeds) == tuple(range(1000, 1007))
        assert config.data.recipient == "lowcontrast" and config.data.recipient_labels == k
        assert config.fl.rounds == full.fl.rounds and config.fl.local_steps == full.fl.local_steps
        assert config.eval.whole_images == full.eval.whole_images and config.eval.select == full.eval.select
        engine.validate_config(config)
    for bad in ("2,session", "4,session", "1,session,tiny", "0,session2", "2,session,session2", "2,session2,tiny"):
        with pytest.raises(ValueError, match="labelled tiles k"):
            data_poor.get_config(bad)
    assert data_poor.main(["--workdir", "/nonexistent/never", "--variant", "session", "--labels", "2"]) == 2
    assert data_poor.main(["--workdir", "/nonexistent/never", "--variant", "session2", "--labels", "1"]) == 2


def test_confirm_variant_is_the_replications():
    """docs/PROTOCOL.md, study (c)'s confirmatory replication: k = 0 and 2, fresh seed pairs 10-19 (none shared
    with the exploratory parts), fedtransfer_gen and the three references only, the same budget."""
    for k in (0, 2):
        config, full = data_poor.get_config(f"{k},confirm"), data_poor.get_config(str(k))
        assert config.name.endswith(f"-k{k}-confirm")
        assert tuple(config.methods) == ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style")
        assert tuple(config.seeds) == tuple(range(10, 20)) and tuple(config.data_seeds) == tuple(range(1010, 1020))
        assert not set(config.seeds) & set(data_poor.PARTS["session"].seeds + data_poor.PARTS["session2"].seeds)
        assert config.data.recipient == "lowcontrast" and config.data.recipient_labels == k
        assert config.fl.rounds == full.fl.rounds and config.fl.local_steps == full.fl.local_steps
        assert config.eval.whole_images == full.eval.whole_images and config.eval.select == full.eval.select
        engine.validate_config(config)
    assert data_poor.PARTS["confirm"].primaries == ("fedtransfer_gen",)
    for bad in ("1,confirm", "4,confirm", "0,confirm,tiny", "2,confirm,session2"):
        with pytest.raises(ValueError, match="labelled tiles k"):
            data_poor.get_config(bad)
    assert data_poor.main(["--workdir", "/nonexistent/never", "--variant", "confirm", "--labels", "1"]) == 2


def test_rounds40_is_the_replication_at_twice_the_rounds_on_development_seeds():
    """docs/PROTOCOL.md, the budget check: the replication's design, fl.rounds doubled, seed pairs 0-2 (the
    exploratory parts' first three, whose 20-round values are recorded), never the replication's."""
    for k, explored in ((0, "session"), (2, "session2")):
        config, confirm = data_poor.get_config(f"{k},rounds40"), data_poor.get_config(f"{k},confirm")
        assert config.fl.rounds == 2 * confirm.fl.rounds == 40 and config.eval.every_rounds == 2
        # the recorded 20-round values it is read beside: the exploratory part's runs, which differ only in
        # rounds, methods and name
        recorded = data_poor.get_config(f"{k},{explored}")
        assert tuple(config.seeds) == tuple(recorded.seeds)[:3]
        mine, theirs = config.to_dict(), recorded.to_dict()
        for key in ("name", "methods", "seeds", "data_seeds"):
            mine.pop(key), theirs.pop(key)
        mine["fl"].pop("rounds"), theirs["fl"].pop("rounds")
        assert mine == theirs
        assert tuple(config.methods) == tuple(confirm.methods)
        assert tuple(config.seeds) == (0, 1, 2) and tuple(config.data_seeds) == (1000, 1001, 1002)
        assert not set(config.seeds) & set(confirm.seeds)
        assert config.fl.local_steps == confirm.fl.local_steps and config.eval.select == confirm.eval.select
        engine.validate_config(config)
    with pytest.raises(ValueError, match="labelled tiles k"):
        data_poor.get_config("1,rounds40")
    assert data_poor.main(["--workdir", "/nonexistent/never", "--variant", "rounds40", "--labels", "1"]) == 2


def test_bad_variants_name_k():
    for bad in (None, "", "3", "tiny", "1,2", "1,tint", "two"):
        with pytest.raises(ValueError, match="labelled tiles k"):
            data_poor.get_config(bad)
    assert data_poor.main(["--workdir", "/nonexistent/never", "--labels", "0,3"]) == 2


def seed_summary(values: dict, k: int, recipient="lowcontrast"):
    where = lambda v: {"per_client": {recipient: {"ari": v}}} if k else {"unseen": {"per_client": {recipient: {"ari": v}}}}
    return {"methods": {m: {"whole_images": where(v)} for m, v in values.items()}}


def fake(k, per_method):
    return {s: seed_summary({m: v[i] for m, v in per_method.items()}, k) for i, s in enumerate((0, 1, 2))}


def test_comparisons_are_paired_t_tests_with_holm_over_every_k():
    a = {"fedavg": [0.2, 0.3, 0.4], "fedtransfer_gen": [0.3, 0.3, 0.6], "gen_random_style": [0.1, 0.2, 0.3]}
    b = {"fedavg": [0.5, 0.5, 0.5], "fedtransfer_gen": [0.6, 0.4, 0.5], "gen_random_style": [0.5, 0.6, 0.4],
         "local": [0.1, 0.1, 0.2]}
    study = data_poor.aggregate({0: fake(0, a), 2: fake(2, b)}, "lowcontrast", primaries=("fedtransfer_gen",))
    k0, k2 = study["per_k"]["0"], study["per_k"]["2"]
    c = k0["comparisons"]["fedtransfer_gen vs fedavg"]
    assert c["p"] == pytest.approx(sp_stats.ttest_rel(a["fedtransfer_gen"], a["fedavg"]).pvalue)
    assert k0["methods"]["fedavg"]["mean"] == pytest.approx(0.3) and "local" not in k0["methods"]
    assert k2["methods"]["local"]["mean"] == pytest.approx(0.4 / 3)
    ps = {(k, n): e["comparisons"][n]["p"] for k, e in study["per_k"].items() for n in e["comparisons"]}
    assert len(ps) == 4  # two references at each of two k: one family
    m = len(ps)
    order = sorted(ps, key=ps.get)
    running = 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * ps[key]))
        assert study["per_k"][key[0]]["comparisons"][key[1]]["p_holm"] == pytest.approx(running)
    # The protocol's rule per k: with references (fedavg, gen_random_style) given, gen must beat both.
    assert k0["verdict"]["fedtransfer_gen"]["sharing_shown"] is None  # gen_own_style absent: left open
    two = data_poor.aggregate({0: fake(0, a)}, "lowcontrast", primaries=("fedtransfer_gen",),
                              references=("fedavg", "gen_random_style"))
    assert two["per_k"]["0"]["verdict"]["fedtransfer_gen"]["sharing_shown"] is False  # p_holm > 0.05 here
    assert "(the protocol's rule): sharing is not shown" in data_poor.markdown(two)
    with pytest.raises(ValueError, match="different seeds"):
        data_poor.aggregate({0: fake(0, a), 2: {0: fake(2, b)[0]}}, "lowcontrast")
    with pytest.raises(ValueError, match="recipient"):
        data_poor.aggregate({1: fake(0, a)}, "sem")


def test_tiny_study_k0_runs_end_to_end(tmp_path):
    workdir = str(tmp_path / "dp")
    assert data_poor.main(["--workdir", workdir, "--variant", "tiny", "--labels", "0", "--cpu_devices", "1"]) == 0
    with open(os.path.join(workdir, "summary_k0.json")) as f:
        study = json.load(f)
    assert not study["complete"] and study["labels"] == [0] and study["recipient"] == "lowcontrast"
    assert set(study["per_k"]["0"]["methods"]) == {"fedavg", "fedtransfer_gen"}  # no local at k = 0
    assert "fedtransfer_gen vs fedavg" in study["per_k"]["0"]["comparisons"]
    assert os.path.isfile(os.path.join(workdir, "summary_k0.md"))
    with open(os.path.join(workdir, "k0", "seed_0", "summary.json")) as f:
        run = json.load(f)
    fedavg, gen = run["methods"]["fedavg"], run["methods"]["fedtransfer_gen"]
    # The recipient takes no segmentation step: it sends no model update in either method ...
    assert "lowcontrast" not in fedavg["privacy_ledger"]["bytes_sent_per_client"]
    # ... but its style message, exactly one, crosses the boundary; no image-shaped array leaves anyone.
    style_bytes = sum(t["bytes"] for t in gen["privacy_ledger"]["tensors"]["style_stats"])
    assert gen["privacy_ledger"]["bytes_sent_per_client"]["lowcontrast"] == style_bytes > 0
    assert not gen["privacy_ledger"]["image_shaped_arrays_sent"]
    # It is scored as a lab nobody's segmenter trained on.
    assert "lowcontrast" in gen["whole_images"]["unseen"]["per_client"]
    assert "lowcontrast" not in gen["whole_images"]["per_client"]
