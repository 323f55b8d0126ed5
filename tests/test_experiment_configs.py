"""Every experiment config and variant is valid as it stands: the config checks pass, every listed method
resolves, and multi-seed studies give one data seed per seed and compare with methods they run."""

import pytest

from experiments import grains, grains_seeds, leave_one_lab_out, pretrained, privacy, real_plus_synthetic, study_v2
from fedtransfer_jax.runs import engine, sweep

CASES = [
    (grains, v) for v in ("default", "smoke", "tiny", "fair")
] + [(grains_seeds, None), (privacy, None), (real_plus_synthetic, None)] + [
    (study_v2, v) for v in ("default", "dev", "tiny")
] + [(pretrained, v) for v in pretrained.VARIANTS] + [(leave_one_lab_out, v) for v in ("tint", "sem,tiny")]


@pytest.mark.parametrize("module,variant", CASES, ids=lambda x: getattr(x, "__name__", str(x)).split(".")[-1])
def test_config_is_valid(module, variant):
    config = module.get_config(variant)
    engine.validate_config(config)
    for name in config.methods:
        engine.method_spec(config, name)
    if config.get("seeds"):
        seeds = sweep.data_seeds(config)
        assert len(seeds) == len(config.seeds)
        for ref in config.get("study_references", ()):
            assert ref in config.methods, f"{module.__name__}: reference {ref} is not run"


def test_study_v2_separates_data_and_init_seeds_and_uses_the_new_labs():
    config = study_v2.get_config()
    assert list(config.seeds) == list(range(10)) and list(config.data_seeds) == [1000 + i for i in range(10)]
    assert {"tem_brightfield", "ebsd_ipf", "polarised_al", "ceramic_sem"} <= set(config.data.unseen_clients)
    assert config.fl.lr_schedule == "cosine" and config.eval.select == "best_val" and config.augment.enabled
    with pytest.raises(ValueError, match="unknown variant"):
        study_v2.get_config("huge")


def test_pretrained_trains_scale_robust_on_every_lab():
    config = pretrained.get_config()
    assert set(pretrained.SYNTHETIC_LABS) | {pretrained.REAL_CLIENT} == set(config.data.clients)
    lo, hi = config.data.grain_diameter_px
    assert lo <= 8 and hi >= 140 and config.data.tile_size >= 256 and config.data.boundary_width_max == 5
    assert len(config.model.features) == 6 and config.augment.enabled
    with pytest.raises(ValueError, match="unknown variant"):
        pretrained.get_config("huge")
