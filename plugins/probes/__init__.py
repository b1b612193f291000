"""First-party probes of the Achilles' Heel paper (§4.1, §4.2, figures 5, 6 and 12)."""

from achilles import hookimpl


@hookimpl
def register_probes(register):
    from .blocking import BlockingProbe
    from .conv_similarity import ConvSimilarityProbe
    from .information_flow import InformationFlowProbe
    from .substitution import SubstitutionProbe

    register("information-flow", InformationFlowProbe,
             description="per-layer token-to-token flow (SSM matrix S or attention) with a logit lens (fig. 5)")
    register("blocking", BlockingProbe,
             description="zero S from key and anchors to later tokens; share of outputs unchanged (fig. 6a)")
    register("substitution", SubstitutionProbe,
             description="give downstream tokens a 43 twin's post-conv states; share collapsing to 43 (fig. 6b)")
    register("conv-similarity", ConvSimilarityProbe,
             description="cosine similarity between conv-kernel taps at init and after training (fig. 12)")
