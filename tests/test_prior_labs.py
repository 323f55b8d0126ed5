"""data.source='prior_labs' (data/prior_labs.py): L labs drawn from the population prior as an ordinary run's
clients. Deterministic from data.seed, nested over L, labs that differ in style, the right split shapes, the
synthetic unseen labs beside them, and config errors that name the key."""

import numpy as np
import pytest

from fedtransfer_jax.data import clients as clients_lib
from fedtransfer_jax.data import population, prior_labs

DATA = {
    "source": "prior_labs",
    "prior_labs": 4,
    "clients": (),
    "unseen_clients": (),
    "image_size": 32,
    "tile_size": 16,
    "train_per_client": 2,
    "val_per_client": 1,
    "test_per_client": 1,
    "seed": 1000,
}


def test_lab_names_sort_and_index():
    assert prior_labs.lab_names(4) == ("prior_00", "prior_01", "prior_02", "prior_03")
    assert prior_labs.lab_names(120)[-1] == "prior_119" and prior_labs.lab_names(120)[5] == "prior_005"
    assert prior_labs.lab_index("prior_03", 4) == 3
    with pytest.raises(ValueError, match="prior_04"):
        prior_labs.lab_index("prior_04", 4)


def test_labs_are_deterministic_nested_over_l_and_split_disjoint():
    a = prior_labs.lab_tiles("prior_01", 4, 7, "train", 3, 32, 16)
    b = prior_labs.lab_tiles("prior_01", 4, 7, "train", 3, 32, 16)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # The same lab in a larger study (L = 16), fewer images: the first ones, unchanged.
    c = prior_labs.lab_tiles("prior_01", 16, 7, "train", 2, 32, 16)
    assert np.array_equal(c[0], a[0][:8]) and np.array_equal(c[1], a[1][:8])
    other_seed = prior_labs.lab_tiles("prior_01", 4, 8, "train", 3, 32, 16)
    assert not np.array_equal(other_seed[0], a[0])
    test = prior_labs.lab_tiles("prior_01", 4, 7, "test", 3, 32, 16)
    assert not np.array_equal(test[0], a[0])  # splits are seeded by name
    # Labels are the exact boundary map (0/1) and there are boundaries to find.
    assert set(np.unique(a[1])) == {0, 1} and 0.02 < a[1].mean() < 0.6


def test_labs_are_the_population_prior_and_differ_in_style():
    spec = prior_labs.population_spec(16, 1000)
    descr = [prior_labs.describe(n, 16, 1000) for n in prior_labs.lab_names(16)]
    for i, d in enumerate(descr):  # the population's own clients, not a copy of its prior
        p = population.client_params(spec, i)
        assert d["style"] == spec.styles[p.style] and d["style_ranges"] == p.style_ranges(spec)
    assert len({d["style"] for d in descr}) >= 3  # several base styles among 16 labs
    assert len({str(d["style_ranges"]) for d in descr}) == 16  # every lab its own sub-ranges
    # Appearance differs between labs: mean intensity of each lab's images, spread over the labs.
    means = [prior_labs.lab_images(n, 16, 1000, "train", 2, 32)[0].mean() for n in prior_labs.lab_names(6)]
    assert np.ptp(means) > 10.0, means


def test_federated_data_shapes_and_whole_images(tmp_path):
    data = prior_labs.load_federated_data(DATA, tmp_path)
    assert data.client_names == prior_labs.lab_names(4)
    # 2 full 32 px images per lab, 4 tiles of 16 px each: [L, 8, 16, 16, 3], all real.
    assert data.train.images.shape == (4, 8, 16, 16, 3) and data.train.labels.shape == (4, 8, 16, 16)
    assert data.train.mask.all() and data.train.images.dtype == np.float32
    assert set(data.val) == set(data.test) == set(data.client_names) and data.unseen == {}
    assert data.val["prior_02"][0].shape == (4, 16, 16, 3) and data.test["prior_02"][1].shape == (4, 16, 16)
    # The images are 8-bit (what place_clients keeps on device) and the labs' tiles differ.
    assert clients_lib.as_uint8_images(data.train.images) is not None
    assert not np.array_equal(data.train.images[0], data.train.images[1])
    whole, notes = prior_labs.whole_test_images(DATA, list(data.client_names), 1, 48)
    assert set(whole) == set(data.client_names) and notes == []
    assert whole["prior_00"][0].shape == (1, 48, 48, 3) and whole["prior_00"][1].max() == 1


def test_unseen_labs_are_the_synthetic_labs_of_the_main_study():
    configs = clients_lib.builder_configs_from({**DATA, "unseen_clients": ("tint",)})
    assert len(configs) == 1 and configs[0].labs == ("tint",)  # only the unseen lab goes through tfds
    assert clients_lib.builder_configs_from(DATA) == []
    whole, _ = prior_labs.whole_test_images({**DATA, "unseen_clients": ("tint",)}, ["tint"], 1, 32)
    same, _ = clients_lib.whole_test_images({**DATA, "source": "synthetic", "prior_labs": 0}, ["tint"], 1, 32)
    assert np.array_equal(whole["tint"][0], same["tint"][0])  # the same test image as the main study's


@pytest.mark.parametrize(
    "override, key",
    [
        ({"prior_labs": 0}, "data.prior_labs"),
        ({"prior_labs": "4"}, "data.prior_labs"),
        ({"source": "synthetic", "clients": ("sem",)}, "data.prior_labs"),  # set for another source
        ({"train_per_client": 0}, "data.train_per_client"),
        ({"val_per_client": -1}, "data.val_per_client"),
        ({"grain_diameter_px": (4.0, 8.0)}, "data.grain_diameter_px"),
        ({"boundary_width_max": 3}, "data.boundary_width_max"),
        ({"boundary_width": 0}, "data.boundary_width"),
    ],
)
def test_bad_config_names_the_key(override, key, tmp_path):
    load = clients_lib.load_federated_data if override.get("source") else prior_labs.load_federated_data
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load({**DATA, **override}, tmp_path)
    with pytest.raises(ValueError, match="data.prior_labs.load_federated_data"):  # not read by the tfds loader
        clients_lib.load_federated_data(DATA, tmp_path)


def test_unknown_clients_are_named(tmp_path):
    with pytest.raises(ValueError, match="prior_07"):
        prior_labs.load_federated_data({**DATA, "clients": ("prior_07",)}, tmp_path)
    with pytest.raises(ValueError, match="nolab"):
        prior_labs.load_federated_data({**DATA, "unseen_clients": ("nolab",)}, tmp_path)
