"""The papers the first-party tasks come from (ids checked against the papers' arXiv pages)."""

from achilles import Paper

ACHILLES_HEEL = Paper(title="Achilles' Heel of Mamba: Essential difficulties of the Mamba architecture "
                            "demonstrated by synthetic data", arxiv="2509.17514")
COPY_AND_COT = Paper(title="Exploring the Limitations of Mamba in COPY and CoT Reasoning", arxiv="2410.03810")
LOCAL_PATTERN_SHORTCUTS = Paper(title="Revealing and Mitigating the Local Pattern Shortcuts of Mamba",
                                arxiv="2410.15678")
