"""Mamba2 (appendix B of the Achilles' Heel paper) and its variants, as token -> logits models.

Read top to bottom: the layer's equations here, then ``Mamba2Layer``, whose ``forward_modular``
computes them one line per equation through the hook points the probes read; then the model,
its settings (``Mamba2Config``) and the registered variants.

One layer, for the residual stream h (N, S, d_model), with D_in = expand * d_model::

    u              = RMSNorm(h)                                   (pre-norm, as mamba_ssm's Block)
    z, xBC, dt     = in_proj(u)            (D_in, D_in + 2 d_state, n_heads)        eq. 1
    conv           = SiLU(Conv1d(xBC))     depthwise, causal, width 4               eq. 2  -> conv.out
    x, B, C        = conv                  (variants change this: residual / gated)       -> ssm.x/B/C
    dt             = softplus(dt + dt_bias)                                                -> ssm.dt
    S              = L o C B^T, L[i,j] = exp(sum_{k=j+1..i} dt_k A), A = -exp(A_log)   eq. 3-5 -> ssm.matrix
    y              = S @ (x * dt) + D x                                             eq. 6  -> ssm.y
    out            = out_proj(RMSNorm(y * SiLU(z)))                                 eq. 7-8 -> out
    h             <- h + out                                                               -> resid.{i}

Model: token embedding (+ learned positional encoding for the variants that have one) ->
layers -> final RMSNorm -> unembedding (untied).

Variants (the registered names set these settings; any of them can be combined by hand):

* ``mamba2-allone``   ``conv_kernel="ones"``: the convolution kernel is fixed to all ones
  (a buffer, never trained; the conv bias still learns), §4.2.
* ``mamba2-posenc``   ``pos_enc=True``: learned absolute positional encoding added to the token
  embedding, §4.2.
* ``mamba2-residual`` ``ssm_input="residual"`` + ``pos_enc=True``: the SSM inputs are
  ``(x, B, C) = SiLU(Conv1d(xBC)) + xBC``, a residual connection from the convolution's input
  straight to the SSM's input, applied to all three of x, B, C, §5 and appendix E.2.
* ``mamba2-gated``    ``ssm_input="gated"``: ``(x, B, C) = SiLU(Conv1d(xBC)) * xBC`` (eq. 9).
  No positional encoding by default (the paper does not say; set ``pos_enc=True`` to add it).
* ``mamba2-global``   ``dt_source="global"``: the global selection of the Local Pattern
  Shortcuts paper, ``dt = W2 . SiLU(W1 . Conv_short(X)) * sigmoid(Conv_long(X))``, adapted to
  Mamba2 (see ``Mamba2Layer.global_dt``).

Choices where the papers are silent (each a setting, recorded in ``model.config``):

* Defaults: d_model 32, 2 layers, d_state 128, expand 2, one head, conv width 4 (appendix E);
  vocab_size 256 (covers the composite and inverse tasks), max_len 512, gamma 0.5.
* Initialisation: every weight with two or more dimensions (embedding, positional encoding,
  in/out projections, conv kernels, W1/W2/long conv, unembedding) by the init rate gamma
  (``achilles.init_gamma_``, fan-in = kernel width for the depthwise conv); A_log, dt_bias, D,
  the conv bias and the norm scales keep the Mamba2 defaults (A ~ U(1, 16), dt log-uniform in
  [0.001, 0.1] through the inverse softplus, D = 1, conv bias ~ U(-1/sqrt(K), 1/sqrt(K)), norms
  1). The all-ones kernel is a buffer, exempt by construction.
* D is one scalar per head (mamba_ssm's default, which the fused kernels use); the paper's D is
  all ones at init either way. The gated RMSNorm normalises over the whole inner dimension
  (one group), eps 1e-5, after the gate (mamba_ssm's ``norm_before_gate=False``).
* SSD form: quadratic (materialises S) for sequences up to ``quadratic_max_len`` = 256 tokens,
  chunked with ``chunk_size`` = 64 above (``ssd_form`` = "quadratic" or "chunked" overrides).
  Whenever ``layers.{i}.ssm.matrix`` is hooked the layer uses the quadratic form, so reading
  or editing S is exact.

Compute paths. ``forward_modular`` is the definition; two optimisations compute the same
function with the same weights (the tests compare all three, values and gradients, with an
independent recurrence written in the tests):

* ``"modular"``: ``Mamba2Layer.forward_modular``, plain autograd through every hook point;
* ``"fast"``: ``mamba2_fast.py``, one autograd Function per layer with a hand-written backward
  over batch tiles (pure PyTorch: the default on CPU, and on GPU without the kernels);
* ``"fused"``: ``fused.py``, mamba-ssm's and causal-conv1d's CUDA kernels (the ``cuda`` extra).

One switch picks the path of each call: ``Mamba2Layer.choose_path``, whose docstring lists its
rules in order. ``layer.force_path = "modular"`` asks for the modular path; ``layer.path`` and
``layer.path_reason`` say which path the last call took and why (logged at DEBUG when it changes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from achilles import HookPoint, ModelConfig, check_int, model_factory

from . import fused, mamba2_fast
from .common import TokenModel, check_backend, check_choice, presets, require
from .ops import GatedRMSNorm, RMSNorm, causal_conv, functorch_active, ssm_input
from .ssd import ssd_apply_matrix, ssd_chunked, ssd_matrix

__all__ = ["ARCHITECTURES", "Mamba2Config", "Mamba2Dims", "Mamba2Layer", "Mamba2Model", "VARIANTS", "build_mamba2"]

log = logging.getLogger(__name__)

#: the compute paths of a layer (module docstring; ``Mamba2Layer.choose_path`` picks one per call)
PATHS = ("fused", "fast", "modular")


class Mamba2Layer(nn.Module):
    """One Mamba2 block with its pre-norm and residual add, built from its ``Mamba2Config``.
    Sites (relative to ``layers.{i}``): conv.out, ssm.x, ssm.B, ssm.C, ssm.dt, ssm.matrix, ssm.y,
    out; and ``resid.{i}``."""

    def __init__(self, config: Mamba2Config, index: int):
        super().__init__()
        c, d = config, config.d_model
        self.index = index
        self.ssm_input, self.dt_source = c.ssm_input, c.dt_source
        self.dims = Mamba2Dims(c.expand * d, c.d_state, c.n_heads, c.n_heads if self.dt_source == "linear" else 0)
        self.backend, self.chunk_size = c.backend, c.chunk_size
        self.ssd_form, self.quadratic_max_len = c.ssd_form, c.quadratic_max_len
        dims, width = self.dims, c.conv_width

        self.norm = RMSNorm(d, c.norm_eps)
        self.in_proj = nn.Linear(d, 2 * dims.d_inner + 2 * dims.d_state + dims.n_dt, bias=False)    # eq. 1
        if c.conv_kernel == "learned":                                                                # eq. 2
            self.conv_weight = nn.Parameter(torch.empty(dims.conv_dim, width))  # gamma init, fan-in K
        else:
            self.register_buffer("conv_weight", torch.ones(dims.conv_dim, width))
        bound = 1 / math.sqrt(width)  # nn.Conv1d's default bias init for a depthwise conv
        self.conv_bias = nn.Parameter(torch.empty(dims.conv_dim).uniform_(-bound, bound))

        # Mamba2 defaults (mamba_ssm/modules/mamba2.py) for dt_bias, A_log and D (eq. 3-6).
        dt = torch.exp(torch.rand(dims.n_heads) * (math.log(c.dt_max) - math.log(c.dt_min))
                       + math.log(c.dt_min)).clamp(min=c.dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(dims.n_heads).uniform_(*c.A_init_range)))
        self.D = nn.Parameter(torch.ones(dims.n_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

        if self.dt_source == "global":
            rank = math.ceil(d / 16) if c.dt_rank == "auto" else c.dt_rank
            self.dt_in = nn.Linear(dims.d_inner, rank, bias=False)         # W1
            self.dt_out = nn.Linear(rank, dims.n_heads, bias=False)        # W2
            # Conv_long: causal, grouped by head (each head's channels -> that head's gate).
            self.long_conv_weight = nn.Parameter(torch.empty(dims.n_heads, dims.head_dim, c.long_conv_width))

        self.gate_norm = GatedRMSNorm(dims.d_inner, c.norm_eps)                                      # eq. 7
        self.out_proj = nn.Linear(dims.d_inner, d, bias=False)                                        # eq. 8

        self.hook_conv = HookPoint("conv.out")
        self.hook_x = HookPoint("ssm.x")
        self.hook_B = HookPoint("ssm.B")
        self.hook_C = HookPoint("ssm.C")
        self.hook_dt = HookPoint("ssm.dt")
        self.hook_matrix = HookPoint("ssm.matrix")
        self.hook_y = HookPoint("ssm.y")
        self.hook_out = HookPoint("out")
        self.hook_resid = HookPoint(f"resid.{index}", absolute=True)
        self._hook_list = [self.hook_conv, self.hook_x, self.hook_B, self.hook_C, self.hook_dt,
                           self.hook_matrix, self.hook_y, self.hook_out, self.hook_resid]
        # the compute path (``choose_path``): a request, and what the last call did
        self.force_path: str | None = None       # "modular" pins the modular path; other values are ignored
        self.path: str | None = None             # "modular" | "fast" | "fused", of the last call
        self.path_reason = "not called yet"      # why ``choose_path`` picked it

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h + block(RMSNorm(h))`` on the path ``choose_path`` picks; each computes ``forward_modular``."""
        path, reason = self.choose_path(h)
        if path != self.path or reason != self.path_reason:
            log.debug("layers.%d of %s: %s path (%s)", self.index, type(self).__name__, path, reason)
            self.path, self.path_reason = path, reason
        if path == "fused":
            return fused.mamba2_layer_forward(self, h)
        if path == "fast":
            return mamba2_fast.mamba2_layer_forward(self, h)
        return self.forward_modular(h)

    # -- the block of appendix B ------------------------------------------------------------
    def forward_modular(self, h: torch.Tensor) -> torch.Tensor:
        """The block, equation by equation, through every hook point."""
        n, length, _ = h.shape
        dims = self.dims
        z, xBC, dt_raw = dims.split_in_proj(self.in_proj(self.norm(h)))                      # eq. 1
        conv = self.hook_conv(causal_conv(xBC, self.conv_weight, self.conv_bias, silu=True))   # eq. 2
        x, B, C = dims.split_conv(ssm_input(self.ssm_input, conv, xBC))
        x, B, C = self.hook_x(x), self.hook_B(B), self.hook_C(C)
        if dt_raw is None:
            dt_raw = self.global_dt(xBC, conv)
        dt = self.hook_dt(F.softplus(dt_raw + self.dt_bias))
        A = -torch.exp(self.A_log)
        xh = x.reshape(n, length, dims.n_heads, dims.head_dim)
        if self.uses_quadratic_form(length):
            S = self.hook_matrix(ssd_matrix(dt, A, B, C))                                      # eq. 3-5
            y = ssd_apply_matrix(S, xh, dt, self.D)                                             # eq. 6
        else:  # the same y, linear in the length (S is never materialised)
            y = ssd_chunked(xh, dt, A, B, C, self.D, self.chunk_size)
        y = self.hook_y(y.reshape(n, length, dims.d_inner))
        out = self.out_proj(self.gate_norm(y, z))                                               # eq. 7-8
        return self.hook_resid(h + self.hook_out(out))

    def uses_quadratic_form(self, length: int) -> bool:
        """Whether the SSD materialises S (always while ``ssm.matrix`` is hooked)."""
        if self.hook_matrix.active or self.ssd_form == "quadratic":
            return True
        return self.ssd_form == "auto" and length <= self.quadratic_max_len

    def global_dt(self, xBC: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
        """Global selection (Local Pattern Shortcuts, §4.2), before softplus and dt_bias:
        ``dt = W2 . SiLU(W1 . Conv_short(X)) * sigmoid(Conv_long(X))``, from the convolution's
        input ``xBC`` and output ``conv``.

        Choices for Mamba2 (the paper modifies Mamba1, whose dt is per channel): X is the x part
        of the convolution's input; ``Conv_short(X)`` is the block's own nonlinear short
        convolution (the x part of ``conv.out``); W1 maps D_in -> dt_rank (ceil(d_model/16),
        Mamba1's default), W2 maps dt_rank -> n_heads; the first sigma is SiLU (the block's
        nonlinearity), the gate's is the sigmoid. ``Conv_long`` is a causal convolution of width
        ``long_conv_width`` (128) grouped by head: each head's gate reads that head's channels,
        which keeps the parameter count of a depthwise long conv (D_in x width). Only the last
        S taps can reach a sequence of length S, so only those are computed.
        """
        dims = self.dims
        x_pre, x_conv = xBC[..., : dims.d_inner], conv[..., : dims.d_inner]
        local = self.dt_out(F.silu(self.dt_in(x_conv)))                    # (N, S, H)
        n, length, _ = x_pre.shape
        taps = min(self.long_conv_weight.shape[-1], length)
        w = self.long_conv_weight[..., -taps:]                              # (H, P, taps)
        xh = x_pre.reshape(n, length, dims.n_heads, dims.head_dim)
        proj = torch.einsum("nshp,hpk->nshk", xh, w)                        # tap k of each position
        # out[t] = sum_k proj[t - (taps-1) + k, k]: a diagonal sum over (time, tap)
        proj = F.pad(proj, (0, 0, 0, 0, taps - 1, 0))
        windows = proj.unfold(1, taps, 1)                                   # (N, S, H, taps, taps)
        long = torch.diagonal(windows, dim1=-2, dim2=-1).sum(-1)             # (N, S, H)
        return local * torch.sigmoid(long)

    # -- the switch: which path computes the block ----------------------------------------------
    def choose_path(self, h: torch.Tensor) -> tuple[str, str]:
        """(path, why) for this call, path one of "modular", "fast", "fused": the first rule that
        applies, in this order.

        1. a hook point of this layer is active: "modular" (only that path has the sites);
        2. inside a ``torch.func`` transform (a vmapped ensemble): "modular" (the other paths'
           autograd Functions do not support them);
        3. ``force_path == "modular"``: "modular";
        4. the backend and the input allow the kernels (``fused.kernels_allowed``: ``backend``
           "fused", or "auto" with a CUDA input and the ``cuda`` extra): "fused" (``backend``
           "fused" with an input off CUDA is an error there);
        5. dt from the global selection (``dt_source="global"``): "modular" (the fast path has none);
        6. the chunked SSD form for this length (``uses_quadratic_form`` false): "modular";
        7. otherwise "fast".
        """
        if any(hp.active for hp in self._hook_list):
            return "modular", "a hook point of this layer is active (only this path has the sites)"
        if functorch_active():
            return "modular", "inside a torch.func transform (the other paths' Functions do not support them)"
        if self.force_path == "modular":
            return "modular", "forced (layer.force_path)"
        kernels, why = fused.kernels_allowed(self.backend, h)
        if kernels:
            return "fused", why
        if self.dt_source != "linear":
            return "modular", f"{why}; the fast path has no global selection (dt_source={self.dt_source!r})"
        if not self.uses_quadratic_form(h.shape[1]):
            return "modular", f"{why}; the chunked SSD for {h.shape[1]} tokens (ssd_form={self.ssd_form!r})"
        return "fast", f"{why}; quadratic SSD for {h.shape[1]} tokens, dt from in_proj, no hook active"


class Mamba2Model(TokenModel):
    """Mamba2 language model: embedding (+ positional encoding) -> Mamba2 layers -> RMSNorm -> unembed."""

    def __init__(self, config: dict):
        settings = Mamba2Config(**config)  # the layers take the typed settings; model.config keeps the dict
        layers = [Mamba2Layer(settings, i) for i in range(settings.n_layers)]
        super().__init__(config, layers, "rmsnorm", settings.norm_eps)
        self.init_weights(settings.gamma)
        self.name_hook_points()

    def conv_kernels(self) -> list[torch.Tensor]:
        """Per layer, the short convolution's kernel (channels = D_in + 2 d_state, width)."""
        return [layer.conv_weight.detach().clone() for layer in self.layers]


@dataclass(frozen=True)
class Mamba2Dims:
    """The widths of one layer and the split of its in-projection, in mamba_ssm's order
    ``[z, x, B, C, dt]`` (every compute path splits the same way)."""

    d_inner: int
    d_state: int
    n_heads: int
    n_dt: int  # n_heads when dt comes from the in-projection, 0 for the global selection

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_heads

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: x, B and C."""
        return self.d_inner + 2 * self.d_state

    def in_proj_rows(self) -> dict[str, slice]:
        """Rows of the in-projection's weight (= channels of its output) per part."""
        sizes = {"z": self.d_inner, "x": self.d_inner, "B": self.d_state, "C": self.d_state, "dt": self.n_dt}
        rows, start = {}, 0
        for part, size in sizes.items():
            rows[part], start = slice(start, start + size), start + size
        return rows

    def conv_channels(self) -> dict[str, slice]:
        """Channels of the convolution's input and output per part: [x, B, C]."""
        rows = self.in_proj_rows()
        offset = rows["x"].start
        return {p: slice(rows[p].start - offset, rows[p].stop - offset) for p in ("x", "B", "C")}

    def split_in_proj(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(z, xBC, dt) views of the in-projection's output; dt is None without an in-projected dt."""
        if self.n_dt:
            return tuple(torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.n_dt], dim=-1))  # type: ignore
        z, xBC = torch.split(zxbcdt, [self.d_inner, self.conv_dim], dim=-1)
        return z, xBC, None

    def split_conv(self, xBC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, B, C) views of a (.., conv_dim) tensor."""
        return tuple(torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1))  # type: ignore


@dataclass
class Mamba2Config(ModelConfig):
    """Mamba2 and variants; every setting lands in ``model.config``. See the module docstring."""

    d_state: int = 128
    expand: int = 2
    n_heads: int = 1
    conv_width: int = 4
    conv_kernel: str = "learned"
    pos_enc: bool = False
    ssm_input: str = "conv"
    dt_source: str = "linear"
    long_conv_width: int = 128
    dt_rank: int | str = "auto"
    chunk_size: int = 64
    ssd_form: str = "auto"
    quadratic_max_len: int = 256
    A_init_range: tuple[float, float] | list[float] = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_backend(self.backend)
        for setting in ("d_state", "expand", "n_heads", "conv_width", "long_conv_width", "chunk_size"):
            check_int(setting, getattr(self, setting), minimum=1)
        inner = self.expand * self.d_model
        require(inner % self.n_heads == 0, "n_heads",
                f"{self.n_heads} heads do not divide the inner dimension expand * d_model = {inner}")
        check_choice(self.conv_kernel, "conv_kernel", ("learned", "ones"))
        require(isinstance(self.pos_enc, bool), "pos_enc", f"must be true or false, got {self.pos_enc!r}")
        check_choice(self.ssm_input, "ssm_input", ("conv", "residual", "gated"))
        check_choice(self.dt_source, "dt_source", ("linear", "global"))
        if self.dt_rank != "auto":
            check_int("dt_rank", self.dt_rank, minimum=1)
        check_choice(self.ssd_form, "ssd_form", ("auto", "quadratic", "chunked"))
        check_int("quadratic_max_len", self.quadratic_max_len, minimum=0)
        low_high = self.A_init_range
        require(isinstance(low_high, (tuple, list)) and len(low_high) == 2 and 0 < low_high[0] <= low_high[1],
                "A_init_range", f"must be two numbers 0 < low <= high, got {low_high!r}")
        require(0 < self.dt_min <= self.dt_max, "dt_min",
                f"need 0 < dt_min <= dt_max, got {self.dt_min!r}, {self.dt_max!r}")
        require(self.dt_init_floor >= 0, "dt_init_floor", f"must be >= 0, got {self.dt_init_floor!r}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")
        self.A_init_range = [float(a) for a in low_high]


build_mamba2 = model_factory(Mamba2Config, Mamba2Model)


# name -> (settings that differ from plain mamba2, one-line description)
VARIANTS: dict[str, tuple[dict, str]] = {
    "mamba2": ({}, "Mamba2 (Achilles' Heel appendix B): nonlinear conv, SSD, gated RMSNorm"),
    "mamba2-allone": ({"conv_kernel": "ones"}, "Mamba2 with the conv kernel fixed to all ones (§4.2)"),
    "mamba2-posenc": ({"pos_enc": True}, "Mamba2 with a learned positional encoding added to the input (§4.2)"),
    "mamba2-residual": ({"ssm_input": "residual", "pos_enc": True},
                        "Mamba2 + residual from conv input to SSM input + positional encoding (§5, E.2)"),
    "mamba2-gated": ({"ssm_input": "gated"}, "Mamba2 whose SSM inputs are post-conv * pre-conv (eq. 9)"),
    "mamba2-global": ({"dt_source": "global"},
                      "Mamba2 with global selection: dt gated by a long convolution (Local Pattern Shortcuts)"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("state-space-model", "mamba2")
ARCHITECTURES = presets(build_mamba2, VARIANTS)
