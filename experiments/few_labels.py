r"""Few labels, then federate: a real lab with 1, 2 or 5 labelled micrographs, fine-tuned alone or federated.

  python launch.py --config experiments/few_labels.py:2 --workdir runs/few_labels/2          # 2 micrographs
  python launch.py --config experiments/few_labels.py:2,scratch --workdir runs/few_scratch/2 # no shipped model
  python launch.py --config experiments/few_labels.py:1,tiny --workdir /tmp/few                # tests

The TBM tint-etched lab (../shared/data/tbm_tint_etched) keeps only k of its training micrographs
(`data.train_groups`, drawn with the split's seed; k = 1, 2 or 5; its validation and test micrographs, split
by full-image id, are the same for every k). Methods: `local` (the lab fine-tunes alone: the TBM row of
`methods.local.per_client` is the curve's "local" point) and `fedavg` (the lab federated with the nine
synthetic labs of experiments/pretrained.py; the TBM row of `methods.fedavg.per_client`) and
`fedtransfer_gen` (the same federation, every lab re-rendering its labels in the others' fitted styles: does
sharing help the data-poor lab? PROTOCOL v2 study (c) on a real lab, with at least one label, since gen
fits a lab's style from its labelled images). All start from a model trained WITHOUT this lab
(`init_from=SYNTHETIC_MODEL`: `python launch.py --config experiments/pretrained.py:synthetic --workdir
runs/pretrained_syn`, the nine synthetic labs only) unless the variant says `scratch`; k = 0 is that model
itself (`python -m fedtransfer_jax.evaluate --workdir runs/pretrained_syn --data_dir <TBM test micrographs>
--out F`). Not the shipped model: it trained on every TBM training and validation micrograph, so "k labels"
on top of it would not be k labels.
Endpoints: the TBM test micrographs' ARI, boundary F1 and grain-count error (summary.json), and the
mean-grain-size error of predict on them.

Cost (estimated, not run): the pretrained config's per-round cost for 10 clients
over 10 rounds, twice, plus local fine-tuning: ~45-60 min per k on the 2-core CPU, minutes on one GPU.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("_pretrained_config", Path(__file__).with_name("pretrained.py"))
_pretrained = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pretrained)

LABELLED = (1, 2, 5)
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
    config.data.group_regex = r"_(\d+)-"
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
