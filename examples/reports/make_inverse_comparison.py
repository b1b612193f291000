"""Draw the inverse-comparison figure and table from three run folders.

    python examples/reports/make_inverse_comparison.py RUN_transformer RUN_mamba2-residual RUN_mamba2
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from achilles.runs import RunFolder  # noqa: E402


def main(paths: list[str]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    rows = []
    for path in paths:
        run = RunFolder(path)
        config, records = run.read_config(), run.read_metrics()
        epochs = [r["epoch"] for r in records]
        for ax, split in zip(axes, ("train", "test", "ood")):
            ax.plot(epochs, [r["metrics"][split]["acc"] for r in records], marker="o", ms=3, label=config["arch"])
            ax.set_title(f"{split} accuracy")
            ax.set_xlabel("epoch")
        final = records[-1]["metrics"]
        seconds = sum(r["train_seconds"] for r in records)
        rows.append(f"| `{config['arch']}` | {final['train']['acc']:.3f} | {final['test']['acc']:.3f} | "
                    f"{final['ood']['acc']:.3f} | {final['test']['forward_match_rate']:.3f} | {seconds / 60:.1f} |")
    for ax in axes:
        ax.axhline(0.2, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy (chance 0.2)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("inverse sequence matching, 2 layers, d_model 128, gamma 0.5, seed 0 (quick profile, CPU)", fontsize=10)
    fig.tight_layout()
    out = Path(__file__).parent / "figures" / "inverse-comparison.png"
    fig.savefig(out, dpi=100)
    print("| arch | train | test | OOD | test forward-match | train minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"figure: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
