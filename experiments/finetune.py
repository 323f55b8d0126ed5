r"""Fine-tune the shipped model on your own labelled micrographs, alone (no federation, nothing leaves the lab).

  python launch.py --config experiments/finetune.py --config.data.dir=MINE --workdir my_model
  python -m fedtransfer_jax.predict --workdir my_model --images IN --out OUT      # then use it
  python launch.py --config experiments/finetune.py:tiny --config.data.dir=D --workdir /tmp/ft   # tests

MINE holds one lab's labelled micrographs as `MINE/images` and `MINE/labels` (255 or 1 = boundary, same
file names), at least 3 of them: the run holds out a quarter of the micrographs (at least one) as its test
set and scores the fine-tuned model on them (summary.md), chooses the post-processing and checks the model
on a fifth of the rest (at least one), and trains on the others, in 256 px tiles. Crops of one micrograph
must stay on one side: name the micrograph in the file names and give the pattern, e.g.
`--config.data.group_regex='_(\d+)-'` for `Sample_18-0-256.png` (without it every file is its own
micrograph).

The recipe is the one measured on the real TBM tint-etched lab (docs/PROTOCOL.md "Personalising the shipped
model", README "Personalising the shipped model"; experiments/personalise.py runs exactly this config on
that lab): the shipped model (`init_from = 'shipped'`), 5 rounds of 10 Adam steps of 8 tiles, the generic
augmentation, the intensity stretch and the cosine schedule of experiments/pretrained.py, method `local`.
A lab with more than one folder (`MINE/<name>/images`) gets one model per folder: name it to predict with
`--method local --client <name>`. With 2 labelled micrographs the split fails (one held out for test leaves
one, which cannot be split again for validation): add `--config.data.val_fraction=0` to skip validation
(nothing then chooses its post-processing: predict uses the built-in settings).

Cost (2-core CPU, the TBM runs of experiments/personalise.py, 13 micrographs as 50 tiles of 256 px):
144-216 s of training (2.5-3.5 min), plus the tfds cache of MINE (seconds for a few dozen images) and the
test scoring; `tiny`: seconds. Measured on one lab (README "Personalising the shipped model"), which had
been one of the shipped model's clients: whether other labs gain as much is not known.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("_personalise_config", Path(__file__).with_name("personalise.py"))
_personalise = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_personalise)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`:` (the shipped model) or `:tiny` (tests: a tiny model from a random init): personalise.py's
    recipe, its data read from any folder instead of the TBM lab's."""
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"experiments/finetune.py: variant is '' or 'tiny', got {arg!r}")
    config = _personalise.get_config(arg)
    config.name = "finetune" + ("-tiny" if variant == "tiny" else "")
    config.data.source = "folder"
    config.data.dir = ""  # the lab's folder: --config.data.dir=MINE (an empty one is refused, naming the key)
    config.data.clients = ()  # every lab folder found in data.dir
    config.data.unseen_clients = ()
    config.data.group_regex = ""
    return config
