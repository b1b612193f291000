"""First-party probes of the Achilles' Heel paper (§4.1, §4.2, figures 5, 6 and 12)."""

from achilles import hookimpl


@hookimpl
def register_probes(register):
    from .blocking import BlockingProbe
    from .conv_similarity import ConvSimilarityProbe
    from .information_flow import InformationFlowProbe
    from .substitution import SubstitutionProbe

    register("information-flow", InformationFlowProbe,
             description="per-layer token flow (SSM matrix or attention) + logit lens (fig. 5)")
    register("blocking", BlockingProbe,
             description="zero S from key/anchors to later tokens: output unchanged? (fig. 6a)")
    register("substitution", SubstitutionProbe,
             description="downstream post-conv states of a 43 twin: output -> 43's? (fig. 6b)")
    register("conv-similarity", ConvSimilarityProbe,
             description="cosine similarity of conv-kernel taps, init vs trained (fig. 12)")
