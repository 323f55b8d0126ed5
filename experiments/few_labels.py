r"""Few labels, then federate: a real lab with 1, 2 or 5 labelled micrographs, fine-tuned alone or federated.

  python -m experiments.few_labels --workdir runs/few_labels --init_from runs/pretrained_syn_cpu   # the curve
  python launch.py --config experiments/few_labels.py:2,local,cpu --workdir runs/few_labels/k2_local  # one run
  python launch.py --config experiments/few_labels.py:2,scratch --workdir runs/few_scratch/2 # no shipped model
  python launch.py --config experiments/few_labels.py:1,tiny --workdir /tmp/few                # tests

The TBM tint-etched lab (../shared/data/tbm_tint_etched) keeps only k of its training micrographs
(`data.train_groups`, drawn with the split's seed; k = 1, 2 or 5; its validation and test micrographs, split
by full-image id, are the same for every k). Methods: `local` (the lab fine-tunes alone) and `fedavg` (the
lab federated with the nine synthetic labs of experiments/pretrained.py) and `fedtransfer_gen` (the same
federation, every lab re-rendering its labels in the others' fitted styles). All start from a model trained
WITHOUT this lab (`init_from`: `python launch.py --config experiments/pretrained.py:synthetic_cpu --workdir
runs/pretrained_syn_cpu`, the nine synthetic labs only) unless the variant says `scratch`; k = 0 is that
model itself. Not the shipped model: it trained on every TBM training micrograph, so "k labels" on top of it
would not be k labels.

Flags after k: `local` (the lab alone, method `local`) or `fedavg` (the federation, method `fedavg` only);
`cpu` (5 rounds, one validation pass: what one 2-core CPU session affords); `scratch`; `tiny` (tests).
The driver (`python -m experiments.few_labels`) runs `:k,local,cpu` and `:k,fedavg,cpu` for k = 1, 2, 5,
scores every model and the starting model on the lab's test micrographs with `evaluate` (scale 1 and auto,
crops pooled per micrograph) and writes the curve (W/summary.md): the design is docs/PROTOCOL.md's "The
few-label curve on a real lab". Endpoints: ARI and boundary F1 per test crop, the mean-intercept error per
test micrograph.

Cost (2-core CPU, measured 2026-12-06): the starting model ~85 min; per k, `local` 2.5 min of training
(143-161 s) and `fedavg` ~20 min (10 labs x 5 rounds x 10 steps x 8 tiles of 256 px), plus ~3-4 min of
scoring per model (both scales); ~1.5 h for the curve after the starting model. Without `cpu` (10 rounds,
three methods with `fedtransfer_gen`): ~45-60 min per k, not run.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("_pretrained_config", Path(__file__).with_name("pretrained.py"))
_pretrained = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pretrained)

LABELLED = (1, 2, 5)
REGEX = r"_(\d+)-"  # TestDataset_18-256-256.png -> micrograph 18: the split's groups and evaluate's pooling
# The starting model must not have seen the recipient lab (see the docstring); override with
# --config.init_from=<workdir of experiments/pretrained.py:synthetic>.
SYNTHETIC_MODEL = str(Path(__file__).resolve().parents[1] / "runs" / "pretrained_syn")


FLAGS = ("scratch", "tiny", "local", "fedavg", "cpu")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`:<k>[,scratch][,local|fedavg][,cpu][,tiny]`: k labelled TBM micrographs (1, 2 or 5)."""
    parts = [p for p in (arg or "").split(",") if p]
    flags = {p for p in parts if p in FLAGS}
    counts = [p for p in parts if p not in FLAGS]
    if len(counts) != 1 or not counts[0].isdigit() or int(counts[0]) not in LABELLED or {"local", "fedavg"} <= flags:
        raise ValueError(
            f"experiments/few_labels.py: name the number of labelled micrographs as the variant, one of "
            f"{LABELLED}, then any of {FLAGS} (local or fedavg, not both) (':2', ':2,scratch', ':2,local,cpu', "
            f"':1,tiny'), got {arg!r}"
        )
    k = int(counts[0])
    tiny = "tiny" in flags
    config = _pretrained.get_config("tiny" if tiny else "default")
    config.name = "few-labels-" + "-".join([str(k)] + [f for f in FLAGS if f in flags])
    config.data.source = "mixed"
    config.data.dir = _pretrained.DEFAULT_DIR
    config.data.group_regex = REGEX
    config.data.test_fraction = 0.25
    config.data.val_fraction = 0.2
    config.data.train_groups = k
    synthetic = tuple(config.data.clients) if tiny else _pretrained.SYNTHETIC_LABS
    config.data.clients = (_pretrained.REAL_CLIENT,) + tuple(c for c in synthetic if c != _pretrained.REAL_CLIENT)
    config.methods = ("local", "fedavg", "fedtransfer_gen")
    if "local" in flags:  # the lab alone: the synthetic labs' own local models would cost 9x and add nothing
        config.data.clients = (_pretrained.REAL_CLIENT,)
        config.methods = ("local",)
    if "fedavg" in flags:
        config.methods = ("fedavg",)
    # With k = 1 the lab holds 3 tiles: alone it repeats them within a batch of 8, as it does in the federation.
    config.fl.allow_batch_repeats = True
    config.init_from = "" if ("scratch" in flags or tiny) else SYNTHETIC_MODEL
    if not tiny:
        config.fl.rounds = 10  # fine-tuning from a trained model
        config.eval.every_rounds = 2
    if "cpu" in flags and not tiny:
        # What one 2-core CPU session affords (see the docstring's cost): 5 rounds of 10 local steps, the
        # recipient lab taking the same 50 steps alone or federated; validated once, at the end.
        config.fl.rounds = 5
        config.eval.every_rounds = 5
        config.checkpoint_every = 1
    return config


# --- The curve's driver: `python -m experiments.few_labels --workdir W --init_from SYN` -------------------
# Runs (each resumable in W/k<k>_<method>), scores each model and the starting model on the lab's test
# micrographs with `evaluate` (W/eval/<model>_s<scale>.json), then writes W/summary.{json,md}
# (docs/PROTOCOL.md, "The few-label curve on a real lab").
SCALES = ("auto", "1")
METHODS = ("local", "fedavg")


def test_folder(data_dir: str, out: str) -> str:
    """`out/{images,labels}`: links to the lab's test crops, exactly the split every run of the curve holds
    out (its config's split: test_fraction 0.25 by micrograph, seed 0). Links from an earlier call are
    replaced, so the folder always shows `data_dir`'s split."""
    from fedtransfer_jax.data import clients  # noqa: PLC0415
    from fedtransfer_jax.data import folder as folder_lib  # noqa: PLC0415

    found = folder_lib.discover_clients(data_dir)
    client_dir = found.get(_pretrained.REAL_CLIENT) or next(iter(found.values()))
    test = clients.folder_split(folder_lib.list_pairs(client_dir), get_config("1,cpu").data)["test"]
    for sub in ("images", "labels"):
        folder = Path(out) / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if old.is_symlink():
                old.unlink()
    for image, label in test:
        for src, sub in ((image, "images"), (label, "labels")):
            (Path(out) / sub / Path(src).name).symlink_to(Path(src).resolve())
    return out


def scored_path(work: str, model: str, scale: str) -> str:
    """Where `evaluate`'s JSON of one model at one scale goes in a driver's workdir."""
    import os  # noqa: PLC0415

    return os.path.join(work, "eval", f"{model}_s{scale}.json")


def score_model(tag: str, work: str, model: str, tests: str, workdir_args: list[str], client: str) -> bool:
    """`evaluate` of one model (`workdir_args`: --workdir/--method, or none for the shipped model) on the
    test crops at each of SCALES, crops pooled per micrograph; a scale already scored is kept. False (with a
    message) when one fails."""
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from experiments import study_driver  # noqa: PLC0415

    for scale in SCALES:
        out = scored_path(work, model, scale)
        if not os.path.exists(out):
            cmd = [sys.executable, "-m", "fedtransfer_jax.evaluate", *workdir_args, "--data_dir", tests,
                   "--group_regex", REGEX, "--scale", scale, "--out", out]
            if subprocess.run(cmd + (["--client", client] if client else []), cwd=study_driver.REPO).returncode:
                print(f"[{tag}] evaluating {model} at scale {scale} failed: rerun to resume", file=sys.stderr)
                return False
    return True


def forget_scores(work: str, model: str) -> None:
    """Scores of an earlier model of this name are not the run about to train."""
    import os  # noqa: PLC0415

    for scale in SCALES:
        if os.path.exists(scored_path(work, model, scale)):
            os.remove(scored_path(work, model, scale))


def model_scores(evaluation: dict) -> dict:
    """One `evaluate` JSON -> per-crop ARI and F1 (by file name) and the per-micrograph intercept errors."""
    per_image = evaluation["per_image"]
    return {
        "ari": {k: v["ari"] for k, v in per_image.items()},
        "boundary_f1": {k: v["boundary_f1"] for k, v in per_image.items()},
        # The thresholded map before any clean-up: training's effect without the post-processing choice.
        "ari_raw": {k: v["ari"] for k, v in evaluation["per_image_raw"].items()},
        "intercept_rel_error": {g: v["intercept_rel_error"] for g, v in evaluation["per_micrograph"].items()},
    }


def aggregate(scores: dict[str, dict[str, dict]]) -> dict:
    """`scores[model][scale]` (model_scores) -> per model and scale the means with t-based 95 % CIs over crops
    (micrographs for the intercept), and the protocol's paired comparisons over crops."""
    from fedtransfer_jax.metrics import stats  # noqa: PLC0415

    out = {"models": {}, "comparisons": {}}
    for model, by_scale in scores.items():
        for scale, s in by_scale.items():
            out["models"].setdefault(model, {})[scale] = {
                "ari": stats.mean_ci(list(s["ari"].values())),
                "boundary_f1": stats.mean_ci(list(s["boundary_f1"].values())),
                "ari_raw": stats.mean_ci(list(s["ari_raw"].values())),
                "intercept_rel_error": stats.mean_ci(list(s["intercept_rel_error"].values())),
                "intercept_rel_error_max": max(s["intercept_rel_error"].values()),
            }

    def paired(a: str, b: str, scale: str, metric: str) -> dict:
        sa, sb = scores[a][scale][metric], scores[b][scale][metric]
        if set(sa) != set(sb):
            raise ValueError(f"{a} and {b} were scored on different crops")
        names = sorted(sa)
        return stats.paired_comparison([sa[n] for n in names], [sb[n] for n in names])

    for scale in SCALES[::-1]:  # scale 1 (the primary) first
        for k in LABELLED:
            local, fed = f"k{k}_local", f"k{k}_fedavg"
            pairs = [(fed, local)] + [(m, "k0") for m in (local, fed)]
            for a, b in pairs:
                if scale in scores.get(a, {}) and scale in scores.get(b, {}):
                    out["comparisons"][f"{a} vs {b} @ {scale}"] = {
                        metric: paired(a, b, scale, metric) for metric in ("ari", "boundary_f1", "ari_raw")
                    }
    return out


def markdown(study: dict) -> str:
    from experiments import study_driver  # noqa: PLC0415

    def ci(m: dict) -> str:
        return f"{m['mean']:.3f} [{study_driver.num(m['ci_low'], '.3f')}, {study_driver.num(m['ci_high'], '.3f')}]"

    lines = [
        "# The few-label curve: the TBM lab with k labelled micrographs (docs/PROTOCOL.md)",
        "",
        "One training seed; intervals are t-based 95 % over the 21 test crops (ARI, F1) or the 5 test micrographs",
        "(intercept error), so they cover test-image variation only.",
        "",
        "| model | scale | ARI per crop | boundary F1 | ARI before clean-up | intercept error per micrograph (max) |",
        "|---|---|---|---|---|---|",
    ]
    for model, by_scale in study["models"].items():
        for scale, m in by_scale.items():
            lines.append(
                f"| {model} | {scale} | {ci(m['ari'])} | {ci(m['boundary_f1'])} | {ci(m['ari_raw'])} | "
                f"{m['intercept_rel_error']['mean']:.1%} ({m['intercept_rel_error_max']:.0%}) |"
            )
    lines += ["", "Paired over the 21 crops (crops of one micrograph are not independent: p is descriptive):", "",
              "| comparison | metric | difference | 95 % CI | p |", "|---|---|---|---|---|"]
    for name, by_metric in study["comparisons"].items():
        for metric, c in by_metric.items():
            lines.append(f"| {name} | {metric} | {study_driver.comparison_cells(c).rsplit(' | ', 1)[0]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from experiments import study_driver  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="The few-label curve (session-sized `cpu` variants).")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--init_from", required=True, help="workdir of experiments/pretrained.py:synthetic_cpu")
    parser.add_argument("--data_dir", default=_pretrained.DEFAULT_DIR, help="the TBM lab's folder")
    parser.add_argument("--labels", default="", help="comma-separated k (default: 1,2,5)")
    parser.add_argument("--methods", default="", help="comma-separated (default: local,fedavg)")
    parser.add_argument("--cpu_devices", default="auto")
    parser.add_argument("--tfds_dir", default="")
    args = parser.parse_args(argv)
    ks = study_driver.pick(args.labels, LABELLED, "--labels", "k")
    methods = study_driver.pick(args.methods, METHODS, "--methods", "method")
    if ks is None or methods is None:
        return 2
    for flag, path in (("--init_from", args.init_from), ("--data_dir", args.data_dir)):
        if not os.path.isdir(path):
            print(f"{flag}: {path} is not a folder", file=sys.stderr)
            return 2
    work = os.path.abspath(args.workdir)
    tests = test_folder(args.data_dir, os.path.join(work, "test_crops"))

    def scored(model: str, scale: str) -> str:
        return scored_path(work, model, scale)

    os.makedirs(os.path.join(work, "eval"), exist_ok=True)
    failed = []
    scores = {}
    for k, method in [(0, "")] + [(k, m) for k in ks for m in methods]:
        model = f"k{k}_{method}" if k else "k0"
        run_dir = os.path.join(work, model) if k else os.path.abspath(args.init_from)
        if k and not os.path.exists(os.path.join(run_dir, "summary.json")):
            forget_scores(work, model)
            overrides = [f"--config.init_from={os.path.abspath(args.init_from)}",
                         f"--config.data.dir={os.path.abspath(args.data_dir)}"]
            overrides += [f"--config.data.tfds_dir={args.tfds_dir}"] if args.tfds_dir else []
            if not study_driver.launch("few_labels", f"k = {k}, {method}", __file__, f"{k},{method},cpu", run_dir,
                                       args.cpu_devices, overrides):
                failed.append(model)
                continue
        workdir_args = ["--workdir", run_dir, "--method", method or "gen_random_style"]
        if not score_model("few_labels", work, model, tests, workdir_args, _pretrained.REAL_CLIENT if k else ""):
            failed.append(model)
    # Every model scored so far (earlier calls' too), so a partial curve pairs with what finished before.
    for name in sorted(os.listdir(os.path.join(work, "eval"))):
        model = name.rsplit("_s", 1)[0]
        if model not in scores and all(os.path.exists(scored(model, s)) for s in SCALES):
            scores[model] = {s: model_scores(study_driver.read_json(scored(model, s))) for s in SCALES}
    study = aggregate(dict(sorted(scores.items(), key=lambda kv: model_order(kv[0]))))
    done = [(int(m[1:].split("_")[0]), m.split("_", 1)[1]) for m in scores if m != "k0"]
    study_driver.write_summary(work, study, markdown(study), done, [(k, m) for k in LABELLED for m in METHODS],
                               lambda p: f"k{p[0]}_{p[1]}")
    return 1 if failed else 0


def model_order(model: str) -> tuple:
    """k0, then each k's local and fedavg models."""
    k, _, method = model[1:].partition("_")
    return int(k), METHODS.index(method) if method in METHODS else -1


if __name__ == "__main__":
    import sys

    sys.exit(main())
