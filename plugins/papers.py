"""The three papers of the first-party tasks and recipes (ids checked against the papers' arXiv pages).

The BibTeX entries are written from the arXiv records (id, title, authors, year of the id); model
cards print them in their citation block."""

from achilles import Paper

ACHILLES_HEEL = Paper(title="Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture "
                            "demonstrated by synthetic data", arxiv="2509.17514", short="Achilles' Heel",
                      bibtex="""@misc{chen2025achilles,
  title         = {Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture demonstrated by synthetic data},
  author        = {Chen, Tianyi and Lin, Pengxiao and Wang, Zhiwei and Xu, Zhi-Qin John},
  year          = {2025},
  eprint        = {2509.17514},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2509.17514}
}""")
COPY_AND_COT = Paper(title="Exploring the Limitations of Mamba in COPY and CoT Reasoning", arxiv="2410.03810", short="COPY and CoT",
                     bibtex="""@misc{ren2024copy,
  title         = {Exploring the Limitations of Mamba in COPY and CoT Reasoning},
  author        = {Ren, Ruifeng and Li, Zhicong and Liu, Yong},
  year          = {2024},
  eprint        = {2410.03810},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2410.03810}
}""")
LOCAL_PATTERN_SHORTCUTS = Paper(title="Revealing and Mitigating the Local Pattern Shortcuts of Mamba",
                                arxiv="2410.15678", short="Local Pattern Shortcuts",
                                bibtex="""@misc{you2024local,
  title         = {Revealing and Mitigating the Local Pattern Shortcuts of Mamba},
  author        = {You, Wangjie and Tang, Zecheng and Li, Juntao and Yao, Lili and Zhang, Min},
  year          = {2024},
  eprint        = {2410.15678},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2410.15678}
}""")

#: appendix D of Achilles' Heel, for the reports' "this run vs the paper" tables
ACHILLES_TRAINING = {"optimizer": "AdamW (0.9, 0.999, eps 1e-8, wd 1e-2)",
                     "lr": "1e-5 → 2.5e-4 (10 warm-up epochs) → 1e-5 (cosine at epoch 200)",
                     "epochs": 200, "grad clip": 1.0}
