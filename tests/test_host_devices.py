"""One XLA:CPU device per core (fedtransfer_jax/runtime/host_devices.py): importing the package starts no JAX
backend (so launch.py can still choose the device count), `configure` sets the count before JAX starts and
leaves it alone after, and benchmarks/round_speed.py's default one-jit round is the engine's mesh round."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fedtransfer_jax.runtime import host_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", host_devices.ENV_VAR)}
    full_env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=full_env, cwd=REPO,
        timeout=600,
    )


def test_importing_the_package_starts_no_backend_and_configure_sets_the_count():
    proc = _run(f"""
        import sys
        sys.path[:0] = [{REPO!r}]
        from jax._src import xla_bridge
        import launch
        from benchmarks import round_speed
        from fedtransfer_jax import audit, predict
        from fedtransfer_jax.runs import engine, runners, report, run_context, style_protocol, sweep, train
        from fedtransfer_jax.runtime import host_devices
        assert not xla_bridge.backends_are_initialized(), "an import started a JAX backend"
        assert host_devices.configure(3) == 3
        import jax
        assert jax.device_count() == 3, jax.devices()
        assert host_devices.configure(2) is None  # JAX has started: left alone
        print("OK")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_xla_flags_and_env_var_win():
    script = """
        from fedtransfer_jax.runtime import host_devices
        import jax
        print(host_devices.configure(), jax.device_count())
    """
    flagged = _run(script, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert flagged.returncode == 0, flagged.stderr[-2000:]
    assert flagged.stdout.split() == ["None", "4"]
    env = _run(script, **{host_devices.ENV_VAR: "2"})
    assert env.returncode == 0, env.stderr[-2000:]
    assert env.stdout.split() == ["2", "2"]


def test_requested_count_parses_and_names_bad_values(monkeypatch):
    monkeypatch.delenv(host_devices.ENV_VAR, raising=False)
    assert host_devices.requested_count("auto") == host_devices.usable_cores() >= 1
    assert host_devices.requested_count(None) == host_devices.usable_cores()
    assert host_devices.requested_count("3") == 3
    monkeypatch.setenv(host_devices.ENV_VAR, "5")
    assert host_devices.requested_count(None) == 5
    assert host_devices.requested_count("2") == 2  # an explicit value beats the environment
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ValueError, match="--cpu_devices"):
            host_devices.requested_count(bad)


def test_round_speed_default_round_is_sharded_over_the_host_devices():
    """The benchmark's default one-jit round uses every host device (the engine's mesh round), `#1` one."""
    proc = _run(f"""
        import sys
        sys.path[:0] = [{REPO!r}]
        from benchmarks import round_speed
        round_speed.main(["--cpu_devices", "2", "--clients", "3", "--local_steps", "1", "--batch_size", "2",
                          "--image_size", "16", "--features", "4,8", "--rounds", "1", "--skip_torch",
                          "--variants", "auto#1", "--json"])
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["plans"]["one_jit"] == {"strategy": "sequential", "chunk": 1, "n_chunks": 2, "devices": 2}
    assert out["plans"]["one_jit[auto#1]"]["devices"] == 1
    assert out["images_per_s"]["one_jit"] > 0 and out["ratio_vs_step_loop"] > 0


UNEVEN_ROUND = """
    import time
    from fedtransfer_jax.runtime import host_devices
    import jax, jax.numpy as jnp
    print(host_devices.patient_collectives({seconds}), flush=True)  # jax imported, backends not started
    host_devices.configure(2)

    def late(x):  # device 0 reaches the all-reduce 4 s after device 1 (wall clock, whatever the CPU)
        return jax.pure_callback(lambda v: (time.sleep(4), v)[1], jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    def step(x):
        return jax.lax.psum(jax.lax.cond(jax.lax.axis_index("i") == 0, late, lambda y: y, x), "i")

    jax.pmap(step, axis_name="i")(jnp.ones((2, 4))).block_until_ready()
    assert host_devices.patient_collectives() is False  # the backends have started
    print("OK")
"""


def test_a_slow_device_at_a_collective_is_waited_for_not_aborted():
    # Through patient_collectives the wait is XLA's to honour: 1 + 1 s makes XLA abort the uneven round (so
    # the flags reach XLA), the default lets it finish; a user's own XLA_FLAGS value is left alone.
    impatient = _run(UNEVEN_ROUND.format(seconds="1, 1"))
    assert impatient.returncode != 0 and "Termination timeout" in impatient.stderr, impatient.stderr[-2000:]
    patient = _run(UNEVEN_ROUND.format(seconds=""))
    assert patient.returncode == 0 and patient.stdout.split() == ["True", "OK"], patient.stderr[-2000:]
    own = _run(UNEVEN_ROUND.format(seconds=""), XLA_FLAGS=f"--{host_devices.COLLECTIVE_FLAG}=600")
    assert own.returncode == 0 and own.stdout.split() == ["False", "OK"], own.stderr[-2000:]
