"""The three papers of the first-party tasks and recipes (ids checked against the papers' arXiv pages)."""

from achilles import Paper

ACHILLES_HEEL = Paper(title="Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture "
                            "demonstrated by synthetic data", arxiv="2509.17514", short="Achilles' Heel")
COPY_AND_COT = Paper(title="Exploring the Limitations of Mamba in COPY and CoT Reasoning", arxiv="2410.03810", short="COPY and CoT")
LOCAL_PATTERN_SHORTCUTS = Paper(title="Revealing and Mitigating the Local Pattern Shortcuts of Mamba",
                                arxiv="2410.15678", short="Local Pattern Shortcuts")

#: appendix D of Achilles' Heel, for the reports' "this run vs the paper" tables
ACHILLES_TRAINING = {"optimizer": "AdamW (0.9, 0.999, eps 1e-8, wd 1e-2)",
                     "lr": "1e-5 → 2.5e-4 (10 warm-up epochs) → 1e-5 (cosine at epoch 200)",
                     "epochs": 200, "grad clip": 1.0}
