"""The three papers the first-party recipes reproduce."""

from achilles.recipes import Paper

ACHILLES_HEEL = Paper("achilles-heel", "Achilles' Heel of Mamba: Essential difficulties of the Mamba "
                      "architecture demonstrated by synthetic data", "2509.17514")
COPY_COT = Paper("copy-cot", "Exploring the Limitations of Mamba in COPY and CoT Reasoning", "2410.03810")
SHORTCUTS = Paper("local-shortcuts", "Revealing and Mitigating the Local Pattern Shortcuts of Mamba", "2410.15678")

#: appendix D of Achilles' Heel, for the reports' "this run vs the paper" tables
ACHILLES_TRAINING = {"optimizer": "AdamW (0.9, 0.999, eps 1e-8, wd 1e-2)",
                     "lr": "1e-5 → 2.5e-4 (10 warm-up epochs) → 1e-5 (cosine at epoch 200)",
                     "epochs": 200, "grad clip": 1.0}
