"""Figure of the synthetic labs: one row per lab, 3 sample micrographs followed by their labels.

    python scripts/make_lab_figure.py --out docs/labs.png [--size 128] [--seed 0] [--labs a,b,...]
    python scripts/make_lab_figure.py --out docs/labs_extra.png \
        --labs tem_brightfield,ebsd_ipf,polarised_al,ceramic_sem          # the labs outside gen's family

Meant for eyeballing realism and the non-IID spread between labs, not for tests.
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedtransfer_jax.data.synthetic import LAB_NAMES, describe_lab, make_lab_examples  # noqa: E402

N_SAMPLES = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/labs.png", help="output PNG path")
    parser.add_argument("--size", type=int, default=128, help="image size in px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labs", default=",".join(LAB_NAMES), help="comma-separated labs (default: all)")
    args = parser.parse_args()
    labs = [l for l in args.labs.split(",") if l]

    fig, axes = plt.subplots(
        len(labs), 2 * N_SAMPLES, figsize=(2.0 * 2 * N_SAMPLES, 2.1 * len(labs)), squeeze=False
    )
    for row, lab in enumerate(labs):
        images, labels, grains = make_lab_examples(lab, N_SAMPLES, args.size, args.seed)
        info = describe_lab(lab)
        for j in range(N_SAMPLES):
            ax_img, ax_lab = axes[row, j], axes[row, N_SAMPLES + j]
            ax_img.imshow(images[j], interpolation="nearest")
            ax_lab.imshow(labels[j], cmap="gray_r", interpolation="nearest", vmin=0, vmax=1)
            ax_lab.set_title(f"{grains[j].max() + 1} grains", fontsize=7)
            for ax in (ax_img, ax_lab):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{lab}\n{info['method']}", fontsize=9)
    fig.suptitle(
        f"Synthetic labs ({args.size} px, seed {args.seed}): 3 samples | boundary labels", fontsize=10
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
