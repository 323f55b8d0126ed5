"""Smoke + equivalence tests of the round benchmarks (tiny sizes; torch parts skip without torch).

The benchmark is only meaningful if its three implementations compute the same round, so with one local
step over the whole client dataset (batch order cannot matter) they must all land on the same params.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from benchmarks import common, round_speed

TINY = common.BenchConfig(clients=2, local_steps=1, batch_size=2, image_size=16, features=(4, 8),
                          optimizer="sgd", lr=0.1, conv_impl="xla")


def _conv_flops(h, k, cin, cout):
  return 2 * h * h * k * k * cin * cout


def test_forward_flops_hand_count():
  """features (4, 8) at 16 px: every conv of the U-Net written out by hand."""
  params = common.init_params(common.make_model(TINY), TINY)
  expected = (_conv_flops(16, 3, 3, 4) + _conv_flops(16, 3, 4, 4)        # down_0
              + _conv_flops(8, 3, 4, 8) + _conv_flops(8, 3, 8, 8)        # down_1 (after the pool)
              + _conv_flops(16, 3, 8, 4)                                 # up_proj_0 (after upsample)
              + _conv_flops(16, 3, 8, 4) + _conv_flops(16, 3, 4, 4)      # up_0 (on the concat)
              + _conv_flops(16, 1, 4, 2))                                # head
  assert common.forward_flops_per_image(params, 16) == expected
  assert len(common.conv_shapes(params, 16)) == 8
  assert common.train_flops_per_round(params, TINY) == 3 * expected * 2 * 1 * 2


def test_make_data_shapes_and_determinism():
  images, labels, mask = common.make_data(TINY)
  chex.assert_shape(images, (2, 2, 16, 16, 3))
  chex.assert_shape(labels, (2, 2, 16, 16))
  chex.assert_shape(mask, (2, 2))
  assert images.dtype == np.uint8 and labels.dtype == np.uint8 and mask.all()  # 8-bit, as kept on device
  np.testing.assert_array_equal(images, common.make_data(TINY)[0])
  assert 0.05 < labels.mean() < 0.3
  as_float = common.make_data(dataclasses.replace(TINY, image_dtype="float32"))[0]
  assert as_float.dtype == np.float32
  np.testing.assert_array_equal(as_float, common.float_images(images))  # the same values either way


def test_summarize_and_int_list():
  st = common.summarize([1.0, 3.0, 2.0])
  assert st["median_s"] == 2.0 and st["spread"] == pytest.approx(1.0)
  assert common.parse_int_list("8,16", "--clients") == [8, 16]
  with pytest.raises(ValueError, match="--clients"):
    common.parse_int_list("8,x", "--clients")


def _one_jit_params(cfg, params, host):
  run, get, compile_s = round_speed.build_one_jit(cfg, params, tuple(jax.device_put(x) for x in host))
  assert compile_s > 0
  run()
  return jax.device_get(get())


@pytest.fixture(scope="module")
def one_round():
  """(initial params, host data, params after one one-jit vmap round, after one step-loop round)."""
  host = common.make_data(TINY)
  params = common.init_params(common.make_model(TINY), TINY)
  run, get = round_speed.build_step_loop(TINY, params, host)
  run()
  return params, host, _one_jit_params(TINY, params, host), jax.device_get(get())


def test_one_jit_matches_step_loop(one_round):
  """S=1, B=N: both see the full client dataset in one batch, so the new global params must agree."""
  params, _, one_jit, loop = one_round
  chex.assert_trees_all_close(one_jit, loop, atol=1e-5, rtol=1e-4)
  moved = max(float(np.abs(a - b).max()) for a, b in
              zip(jax.tree_util.tree_leaves(one_jit), jax.tree_util.tree_leaves(params)))
  assert moved > 1e-4  # the round actually trained something


def test_sequential_strategy_matches_vmap(one_round):
  params, host, one_jit, _ = one_round
  seq = _one_jit_params(dataclasses.replace(TINY, strategy="sequential"), params, host)
  chex.assert_trees_all_close(seq, one_jit, atol=1e-5, rtol=1e-4)


def test_run_benchmark_json_contract(capsys, monkeypatch):
  """The driver and its JSON line; the builders are stubbed (the real ones are covered above)."""
  import time

  def fake_round(seconds):
    return lambda: time.sleep(seconds)

  monkeypatch.setattr(round_speed, "build_one_jit", lambda cfg, p, d: (fake_round(0.002), None, 1.5))
  monkeypatch.setattr(round_speed, "build_step_loop", lambda cfg, p, d: (fake_round(0.004), None))
  out = round_speed.main(["--clients", "2", "--local_steps", "1", "--batch_size", "1", "--image_size", "16",
                          "--features", "4,8", "--rounds", "1", "--skip_torch", "--conv_impl", "xla", "--json"])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  parsed = json.loads(last)
  assert parsed["images_per_s"]["torch"] is None and parsed["ratio_vs_torch"] is None
  for key in ("one_jit", "step_loop"):
    assert parsed["images_per_s"][key] > 0
    assert parsed["images_per_s"][key] == pytest.approx(2 / parsed["round_time_s"][key])
  assert parsed["ratio_vs_step_loop"] == pytest.approx(
      parsed["images_per_s"]["one_jit"] / parsed["images_per_s"]["step_loop"])
  assert parsed["achieved_gflops"] == pytest.approx(
      parsed["flops_per_round"] / parsed["round_time_s"]["one_jit"] / 1e9)
  assert parsed["config"]["images_per_round"] == 2 and "cpu" in parsed["device"]
  assert parsed["compile_s"]["one_jit"] == 1.5
  assert parsed["ratio_vs_step_loop"] > 0  # (no timed assertion: sleep() overshoots on a loaded machine)
  assert out == parsed


def test_float_and_uint8_data_give_the_same_round(one_round):
  """The one-jit round decodes uint8 images in the step bit for bit like host float32 data."""
  params, host, one_jit, _ = one_round
  f32 = dataclasses.replace(TINY, image_dtype="float32")
  chex.assert_trees_all_equal(_one_jit_params(f32, params, common.make_data(f32)), one_jit)


def test_parse_variant_and_errors():
  v = round_speed.parse_variant("chunked:4@bfloat16/flax", TINY)
  assert (v.strategy, v.chunk_size, v.dtype, v.norm_impl) == ("chunked", 4, "bfloat16", "flax")
  assert round_speed.parse_variant("auto", TINY).strategy == "auto"
  v = round_speed.parse_variant("chunked:4%im2col", TINY)
  assert (v.chunk_size, v.conv_impl) == (4, "im2col")
  v = round_speed.parse_variant("chunked:4@bfloat16#1", TINY)
  assert (v.strategy, v.chunk_size, v.dtype, v.devices) == ("chunked", 4, "bfloat16", 1)
  base = round_speed.parse_variant("sequential/baseline", TINY)
  assert (base.norm_impl, base.fast_pool) == ("flax", False)
  for bad, msg in (("pmap", "unknown strategy"), ("vmap@f16", "unknown dtype"), ("vmap/bn", "norm impl"),
                   ("chunked:x", "chunk"), ("vmap%cudnn", "conv impl"), ("auto#0", "devices")):
    with pytest.raises(ValueError, match=msg):
      round_speed.parse_variant(bad, TINY)


def test_time_interleaved_is_round_robin():
  calls = []
  out = common.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2)
  assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then A B A B
  assert len(out["a"]["times"]) == 2 and len(out["b"]["cpu_times"]) == 2


def test_roofline_math():
  from benchmarks import roofline
  # 1 TFLOP in 1 s, 100 GB: intensity 10 FLOP/B; peaks 10 TFLOP/s and 1000 GB/s -> ridge 10: compute-bound.
  r = roofline.roofline(1e12, 1e11, 1.0, 10.0, 1000.0)
  assert r["achieved_tflops"] == pytest.approx(1.0) and r["achieved_gbps"] == pytest.approx(100.0)
  assert r["ridge_flop_per_byte"] == pytest.approx(10.0) and r["bound"] == "compute"
  assert r["fraction_of_peak_flops"] == pytest.approx(0.1) and r["fraction_of_bandwidth"] == pytest.approx(0.1)
  assert roofline.roofline(1e12, 1e12, 1.0, 10.0, 1000.0)["bound"] == "memory"  # intensity 1 < 10
  assert roofline.roofline(1e12, 1e11, 1.0, None, None)["bound"] is None
  assert "compute-bound" in roofline.format_roofline({**r, "flops": 1e12, "bytes": 1e11})


def test_local_step_cost_counts_one_step():
  """XLA's FLOPs of one compiled local step are the model's conv FLOPs of one step, to within ~20 % (XLA
  also counts GroupNorm, the loss, the optimizer; the model count is convs only)."""
  from benchmarks import roofline
  params = common.init_params(common.make_model(TINY), TINY)
  step = roofline.local_step_cost(TINY, params)
  model_step = common.train_flops_per_round(params, TINY) / (TINY.clients * TINY.local_steps)
  assert 0.8 * model_step < step["flops"] < 1.5 * model_step and step["bytes"] > 0


def test_run_benchmark_with_variants_and_roofline(capsys):
  """The real driver end to end at tiny sizes: two one-jit variants, the step loop, the roofline from given
  peaks (no peak measurement), one JSON line."""
  peaks = {"f32_tflops": 1.0, "bf16_tflops": 2.0, "bandwidth_gbps": 10.0}
  out = round_speed.run_benchmark(TINY, rounds=1, variants=("sequential",), skip_torch=True, peaks=peaks,
                                  roofline_on=True, log=lambda s: None)
  assert set(out["plans"]) == {"one_jit", "one_jit[sequential]"}
  assert out["plans"]["one_jit[sequential]"]["chunk"] == 1
  for name in ("one_jit", "one_jit[sequential]", "step_loop"):
    assert out["images_per_s"][name] > 0 and out["cpu_time_s"][name] > 0
  r = out["roofline"]["one_jit"]
  assert r["peak_tflops"] == 1.0 and r["bound"] in ("compute", "memory") and r["bytes"] > 0
  json.dumps(out)  # JSON-able
  assert "roofline" in round_speed.format_table(out)


def test_matmul_peak_tiny_runs():
  from benchmarks import matmul_peak
  res = matmul_peak.measure(tiny=True)
  assert res["f32_tflops"] > 0 and res["bf16_tflops"] > 0 and res["bandwidth_gbps"] > 0


def test_gpu_summary_reads_partial_outputs(tmp_path):
  """A failed step is reported, not raised: summary of a folder with only the peaks and a failed round."""
  from benchmarks import gpu_summary
  (tmp_path / "peaks.log").write_text('text\n{"device": "x", "bf16_tflops": 2.0}\n')
  (tmp_path / "peaks.status").write_text('{"rc": 0, "seconds": 3}')
  (tmp_path / "round.status").write_text('{"rc": 124, "seconds": 150}')
  s = gpu_summary.summarize(tmp_path, 12.0)
  assert s["device"] == "x" and s["steps"]["round"]["rc"] == 124 and s["round"] is None
  assert s["scaling"] == [] and s["total_seconds"] == 12.0


def test_bad_strategy_is_named():
  with pytest.raises(ValueError, match="--strategy"):
    round_speed.run_benchmark(dataclasses.replace(TINY, strategy="pmap"), rounds=1)


# -------------------------------------------------------------------------------------------- torch


def test_torch_forward_and_loss_match_flax():
  torch = pytest.importorskip("torch")
  from benchmarks import torch_unet
  from fedtransfer_jax.models.losses import segmentation_loss

  model = common.make_model(TINY)
  params = common.init_params(model, TINY)
  # Perturb norms/biases away from their (1, 0) init so a mis-mapped parameter would show.
  rng = np.random.default_rng([0, 1])
  params = jax.tree_util.tree_map(lambda a: np.asarray(a) + 0.1 * rng.standard_normal(a.shape, np.float32),
                                  params)
  images, labels, mask = common.make_data(TINY)
  x, y, m = common.float_images(images[0]), labels[0], np.array([True, False])
  logits = np.asarray(jax.jit(model.apply)({"params": params}, x))
  tm = torch_unet.TorchUNet(TINY.features)
  torch_unet.load_flax_params(tm, params)
  assert sum(v.numel() for v in tm.parameters()) == sum(a.size for a in jax.tree_util.tree_leaves(params))
  with torch.no_grad():
    t_logits = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    t_loss = torch_unet.segmentation_loss(t_logits, torch.from_numpy(y.astype(np.int64)), torch.from_numpy(m))
  np.testing.assert_allclose(t_logits.numpy().transpose(0, 2, 3, 1), logits, atol=1e-4, rtol=1e-4)
  j_loss, _ = segmentation_loss(logits, y, m)
  np.testing.assert_allclose(float(t_loss), float(j_loss), rtol=1e-5)


def test_torch_round_matches_one_jit(one_round):
  pytest.importorskip("torch")
  params, host, one_jit, _ = one_round
  run, tm = round_speed.build_torch(TINY, host, params)
  run()
  expected = torch_unet_state_from_flax(one_jit)
  got = {k: v.numpy() for k, v in tm.state_dict().items()}
  assert expected.keys() == got.keys()
  for k in got:
    np.testing.assert_allclose(got[k], expected[k], atol=1e-4, rtol=1e-3, err_msg=k)


def torch_unet_state_from_flax(params) -> dict:
  from benchmarks import torch_unet
  tm = torch_unet.TorchUNet(TINY.features)
  torch_unet.load_flax_params(tm, params)
  return {k: v.numpy() for k, v in tm.state_dict().items()}


# ------------------------------------------------------------------------------------ experiments/scaling


def test_scaling_get_config_says_run_as_script():
  from experiments import scaling
  with pytest.raises(ValueError, match="python -m experiments.scaling --out"):
    scaling.get_config()


def test_memory_slope_recovers_a_line():
  from experiments import scaling
  slope, intercept = scaling.memory_slope([8, 16, 32], [1000 + 5 * c for c in (8, 16, 32)])
  assert slope == pytest.approx(5.0) and intercept == pytest.approx(1000.0)


def test_per_client_estimate_hand_count():
  """features (4, 8), 16 px, SGD, B=2, N=2, uint8 images: every term by hand."""
  from experiments import scaling
  params = common.init_params(common.make_model(TINY), TINY)
  p = sum(a.size for a in jax.tree_util.tree_leaves(params))
  conv_out = 16 * 16 * (4 + 4 + 4 + 4 + 4) + 8 * 8 * (8 + 8)   # 3x3 convs (down_0 x2, up_proj_0, up_0 x2; down_1 x2)
  act = 4 * conv_out + 16 * 16 * 2 + 16 * 16 * 3                # 4 copies; 1x1 head (one copy); input image
  est = scaling.per_client_bytes_estimate(params, TINY, "sgd")
  assert est["params"] == 4 * 4 * p and est["opt_state"] == 0
  assert est["activations"] == 4 * 2 * act
  assert est["data"] == 2 * 16 * 16 * (3 + 1) + 2  # uint8 image + uint8 label + mask per example
  f32 = dataclasses.replace(TINY, image_dtype="float32")
  assert scaling.per_client_bytes_estimate(params, f32, "sgd")["data"] == 2 * 16 * 16 * 13 + 2
  assert scaling.per_client_bytes_estimate(params, TINY, "adam")["opt_state"] == 4 * 2 * p
  model = scaling.memory_model(params, TINY, "sgd")
  assert model.per_chunk_client == est["params"] + est["activations"]
  assert model.fixed == TINY.clients * est["data"] + 4 * 2 * p  # all clients' data + server params + its sum


def test_scaling_plans_auto_like_the_trainer():
  from experiments import scaling
  params = common.init_params(common.make_model(TINY), TINY)
  cfg, plan = scaling.planned(dataclasses.replace(TINY, strategy="auto"), scaling.memory_model(params, TINY, "sgd"))
  assert (cfg.strategy, cfg.chunk_size) == ("sequential", 1) == (plan.strategy, plan.chunk)  # CPU
  text = scaling.describe_plan_at(params, dataclasses.replace(TINY, clients=4096), "sgd", 80e9)
  assert "chunked:32" in text and "fits: True" in text


def test_memory_analysis_path_and_outputs(tmp_path):
  """`_memory` on a small compiled function, then the CSV and PNG writers on two fake rows."""
  import csv
  import jax.numpy as jnp
  from experiments import scaling
  compiled = jax.jit(lambda x: (x @ x.T).sum()).lower(jnp.ones((64, 32), jnp.float32)).compile()
  mem = scaling._memory(compiled)
  assert mem["compiled_argument_bytes"] == 64 * 32 * 4
  assert mem["memory_bytes"] >= mem["compiled_argument_bytes"]
  rows = [dict(clients=c, status="ok", strategy="vmap", image_size=16, features="4-8", local_steps=1, batch_size=2,
               round_time_s=0.01 * c, images_per_s=100.0, memory_bytes=1000 * c, device="cpu") for c in (2, 4)]
  scaling.write_csv(rows, str(tmp_path / "s.csv"))
  scaling.plot(rows, str(tmp_path / "s.png"), {"total": 1000.0}, 0.0)
  with open(tmp_path / "s.csv") as f:
    got = list(csv.DictReader(f))
  assert [r["clients"] for r in got] == ["2", "4"] and got[1]["memory_bytes"] == "4000"
  assert (tmp_path / "s.png").stat().st_size > 1000
