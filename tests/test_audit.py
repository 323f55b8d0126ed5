"""The audit of a workdir (privacy/audit/run.py) and its command line (fedtransfer_jax/audit.py): the report
is written, and the audit recomputes what clients shared."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax import audit as audit_cli
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.data.synthetic import make_lab_examples
from fedtransfer_jax.privacy import audit

SEED = 0


def test_cli_writes_audit_json_and_markdown(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("grains", "experiments/grains.py")
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    io_utils.write_json_atomic(
        str(tmp_path / "config.json"), io_utils.config_to_json(grains.get_config("tiny"))
    )
    argv = [
        "--workdir",
        str(tmp_path),
        "--clients",
        "brightfield,darkfield",
        "--victims",
        "1",
        "--max_images",
        "3",
        "--style_steps",
        "10",
        "--gi_steps",
        "5",
        "--gi_size",
        "16",
        "--gi_batch_sizes",
        "1",
        "--noise_multipliers",
        "1.0",
        "--gi_features",
        "8",
        "--pi_tiles",
        "12",
        "--pi_permutations",
        "20",
    ]
    assert audit_cli.main(argv) == 0
    report = json.loads((tmp_path / "audit.json").read_text())
    clients = ["brightfield", "darkfield"]  # the Potts labs (sem, lowcontrast) take longer to generate
    assert set(grains.get_config("tiny").data.clients) >= set(clients)
    assert sorted(report["style_inversion"]) == sorted(clients)
    assert set(report["style_inversion"][clients[0]]) == {
        "adain",
        "fourier",
        "adain/control",
        "fourier/control",
    }
    assert set(report["gradient_inversion"][clients[0]]["batch1"]) >= {"no_dp", "dp_z1", "control"}
    assert set(report["gen_inversion"][clients[0]]) == {"gen", "gen/control"}
    pi = report["property_inference"][clients[0]]
    assert pi["tiles"] == 12 and set(pi["methods"]) == {"adain", "fourier", "gen"}
    assert set(pi["methods"]["gen"]) == set(audit.PROPERTY_TARGETS)
    md = (tmp_path / "audit.md").read_text()
    assert "## (a) Inverting shared style statistics" in md and f"{clients[0]} / fourier" in md
    assert f"{clients[0]} / gen/control" in md and "## (c) Property inference" in md
    assert "style_message_gen" in md and "property inference (gen message)" in md
    assert "## What leaks (measured" in md and report["what_is_sent"]["model_delta"]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())  # atomic writes left no temp files


def test_the_audit_recomputes_the_adain_statistics_clients_shared():
    # The clients' statistics come from the frozen encoder of init_style_net(fold_in(PRNGKey(seed), 0x57));
    # the audit initialises only the encoder, which must give the same vectors.
    from fedtransfer_jax.style.network import StyleNet, init_style_net

    config = {"seed": 3, "style": {"features": (4, 8)}}  # tiny: initialisers dominate the compile time
    fns, _ = audit.style_stats_fns(config, 8)
    net = StyleNet(features=(4, 8))
    params = jax.jit(lambda k: init_style_net(net, k, 8))(jax.random.fold_in(jax.random.PRNGKey(3), 0x57))
    x = jnp.asarray(make_lab_examples("darkfield", 1, 8, SEED)[0])
    mean, std = jax.jit(lambda p, x: net.apply({"params": p}, x, method=StyleNet.style_stats))(params, x)
    got = jax.jit(fns["adain"])(x[0])
    np.testing.assert_allclose(np.asarray(got["mean"]), np.asarray(mean[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["std"]), np.asarray(std[0]), rtol=1e-5, atol=1e-6)
