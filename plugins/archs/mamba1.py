"""Mamba1 (Gu & Dao 2023): the selective SSM (S6) block of mamba_ssm's ``Mamba``, as a token ->
logits model in the same pre-norm residual structure as ``mamba2``.

One layer, for the residual stream h (N, S, d_model), with D_in = expand * d_model::

    u           = RMSNorm(h)                                    (pre-norm, as mamba_ssm's Block)
    x, z        = in_proj(u)               (D_in, D_in), mamba_ssm's order
    x           = SiLU(Conv1d(x))          depthwise, causal, width 4              -> conv.out, ssm.x
    dt, B, C    = x_proj(x)                (dt_rank, d_state, d_state)              -> ssm.B, ssm.C
    dt          = softplus(dt_proj(dt))    per channel, dt_proj has a bias          -> ssm.dt
    A           = -exp(A_log)              (D_in, d_state): one decay per channel and state
    h_t         = exp(dt_t A) * h_{t-1} + dt_t x_t B_t      (D_in, d_state) per token
    y_t         = h_t C_t + D x_t                                                   -> ssm.y
    out         = out_proj(y * SiLU(z))                                             -> out
    h          <- h + out                                                           -> resid.{i}

``layers.{i}.ssm.matrix``: S6 is D_in independent single-channel SSMs sharing B and C, so its
token-to-token matrix is one (S, S) matrix per channel, exactly (``ssd.s6_matrix``)::

    S[n, d, t, s] = sum_k C[t, k] B[s, k] exp(A[d, k] (cum_t - cum_s)),  cum = cumsum(dt[:, d]), s <= t
    y[:, d]       = S[:, d] @ (dt[:, d] * x[:, d]) + D[d] x[:, d]

the same convention as Mamba2's S (dt and D outside). The site holds it as (N, heads = D_in, S, S):
every channel is a "head" of head size 1, so blocking (zeroing S[:, :, t, s]) cuts token s out of
token t's mixing in every channel, and the probes that read heads average over channels
(``information-flow`` averages |S| over heads). Only materialised while hooked: (N, D_in, S, S)
floats, 0.8 MiB a sequence at the inverse shape (D_in 256, S 29).

Choices (each a setting in ``model.config``):

* Defaults are mamba_ssm's ``Mamba``: d_state 16, expand 2, dt_rank ceil(d_model / 16), conv
  width 4 with a bias, no bias in in/out projections, A = 1..d_state in every channel (S4D real),
  D = 1, dt log-uniform in [0.001, 0.1] through the inverse softplus into dt_proj's bias, floor
  1e-4. d_model 32 and 2 layers like every architecture here (recipes swap them in); no positional
  encoding (``pos_enc`` adds the learned one, as on ``mamba2``).
* Initialisation: every weight with two or more dimensions by the init rate gamma (as the other
  architectures: embedding, in/x/dt/out projections, conv kernel with fan-in = width, unembedding)
  except A_log, which keeps the S4D-real init; dt_proj's bias, D, the conv bias and the norm scales
  keep mamba_ssm's defaults. A_log, D and dt_proj's bias are ``_no_weight_decay`` (mamba_ssm).
* RMSNorm eps 1e-5 (pre-norm and final), untied unembedding.

Compute paths of a layer (same weights, same function; tests compare them):

* fused (CUDA with the ``cuda`` extra, backend "auto" or "fused"): causal-conv1d (when installed)
  and mamba_ssm's ``selective_scan_fn`` (dt_proj's bias and the softplus inside the kernel, the
  gate SiLU(z) too), looked up lazily and only when CUDA is available (never imported on a CPU);
* scan (the default otherwise): one autograd Function over the sequential scan, vectorised over
  batch, channels and states, run in batch tiles of ``TILE_STATES`` state entries, with its
  backward written out (the reverse scan). Like mamba_ssm's kernel it saves only its inputs and
  recomputes each tile's decays exp(dt A) and states in the backward, so memory does not grow as
  N x S x D_in x d_state (0.5 GB per such tensor at batch 1024, S 29, D_in 256, d_state 16) and
  the tiles' temporaries stay in cache (plain autograd over the loop, the modular path, keeps
  every step's state);
* compiled (the default on a CPU for float32 work of at least ``s6_compiled.MIN_STATES`` state
  entries, N x S x D_in x d_state): the same scan compiled by ``torch.compile`` in chunks of 8
  tokens (``s6_compiled``), about 2-4x faster than the eager scan below; compiled once per machine
  (about a minute, then cached), off with ``ACHILLES_COMPILE_SCAN=0``, and replaced by the eager
  scan, with one warning, where compiling fails (no C++ compiler). Small work (the tests' tiny
  models) skips it: compiling would cost more than it saves;
* modular: the same equations in plain autograd ops through every hook point; runs whenever a
  hook point of the layer is active (the materialised S when ``ssm.matrix`` is) and under
  ``torch.func`` transforms (a vmapped ensemble).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from achilles import ConfigError, HookPoint, ModelConfig, check_int, init_gamma_, model_factory

from . import fused, s6_compiled
from .common import TokenModel, check_choice, presets, require, BACKENDS
from .ops import RMSNorm, at_least_fp32, causal_conv, full_precision, functorch_active
from .ssd import apply_s6_matrix, s6_matrix

__all__ = ["ARCHITECTURES", "Mamba1Config", "Mamba1Layer", "Mamba1Model", "build_mamba1", "s6_matrix",
           "selective_scan", "selective_scan_reference"]

log = logging.getLogger(__name__)

_cache: dict[str, object] = {}


# -- the selective scan ----------------------------------------------------------------------
def selective_scan_reference(x, dt, A, B, C, D):
    """y (N, S, D_in) of the S6 recurrence in plain autograd ops: x, dt (N, S, D_in), A (D_in, Nst),
    B, C (N, S, Nst), D (D_in,). Used under ``torch.func`` and by the tests."""
    dA = torch.exp(dt.unsqueeze(-1) * A)                         # (N, S, D_in, Nst)
    dBx = (dt * x).unsqueeze(-1) * B.unsqueeze(2)
    h = dBx[:, 0]
    states = [h]
    for t in range(1, x.shape[1]):
        h = dA[:, t] * h + dBx[:, t]
        states.append(h)
    hs = torch.stack(states, 1)
    return torch.matmul(hs, C.unsqueeze(-1)).squeeze(-1) + x * D


#: the scan Function works on batch tiles of about this many state entries (N x S x D_in x d_state),
#: so that its (S, D_in, d_state) temporaries stay in cache and are not page-faulted in afresh
TILE_STATES = 1 << 21


def _tiles(n: int, per_sample: int) -> list[slice]:
    return s6_compiled.batch_tiles(n, per_sample, TILE_STATES)


def _states(x, dt, A, B):
    """(decays exp(dt A), states h) of one tile, each (n, S, D_in, Nst)."""
    dA = (dt.unsqueeze(-1) * A).exp_()
    hs = (dt * x).unsqueeze(-1) * B.unsqueeze(2)             # dt x B, overwritten by the states
    for t in range(1, x.shape[1]):
        hs[:, t].addcmul_(dA[:, t], hs[:, t - 1])
    return dA, hs


class _SelectiveScan(torch.autograd.Function):
    """The S6 scan (see ``selective_scan_reference``) over batch tiles, with the reverse scan as its
    backward. Like mamba_ssm's kernel it keeps no states for the backward: each tile's decays and
    states are recomputed there (the scan is cheap next to the memory a saved (N, S, D_in, d_state)
    tensor costs)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        n, length, d_inner = x.shape
        y = torch.empty_like(x)
        for tile in _tiles(n, length * d_inner * A.shape[1]):
            _, hs = _states(x[tile], dt[tile], A, B[tile])
            torch.matmul(hs, C[tile].unsqueeze(-1), out=y[tile].unsqueeze(-1))
        y.addcmul_(x, D)
        ctx.save_for_backward(x, dt, A, B, C, D)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, dt, A, B, C, D = ctx.saved_tensors
        n, length, d_inner = x.shape
        gy = gy.contiguous()
        gx, g_dt, gB, gC = (torch.empty_like(t) for t in (x, dt, B, C))
        gA = torch.zeros_like(A)
        for tile in _tiles(n, length * d_inner * A.shape[1]):
            xt, dtt, Bt, gyt = x[tile], dt[tile], B[tile], gy[tile]
            dA, hs = _states(xt, dtt, A, Bt)
            torch.matmul(gyt.unsqueeze(2), hs, out=gC[tile].unsqueeze(2))
            gh = gyt.unsqueeze(-1) * C[tile].unsqueeze(2)        # (n, S, D_in, Nst): dL/dh_t
            for t in range(length - 2, -1, -1):
                gh[:, t].addcmul_(dA[:, t + 1], gh[:, t + 1])
            g_dtx = torch.matmul(gh, Bt.unsqueeze(-1)).squeeze(-1)
            torch.matmul((dtt * xt).unsqueeze(2), gh, out=gB[tile].unsqueeze(2))
            torch.mul(g_dtx, xt, out=g_dt[tile])
            torch.mul(g_dtx, dtt, out=gx[tile])
            if length > 1:
                # h_t = dA_t h_{t-1} + ...: dL/d(dt_t A) = gh_t * h_{t-1} * dA_t (0 at t = 0)
                e = gh
                e[:, 1:].mul_(hs[:, :-1])
                e[:, 0].zero_()
                e.mul_(dA)
                g_dt[tile] += (e * A).sum(-1)
                gA += e.mul_(dtt.unsqueeze(-1)).reshape(-1, *A.shape).sum(0)
        gx.addcmul_(gy, D)
        gD = (gy * x).sum((0, 1))
        return gx, g_dt, gA, gB, gC, gD


def selective_scan(x, dt, A, B, C, D):
    """y = the S6 scan of x with step sizes dt (after softplus), A (D_in, Nst), B, C (N, S, Nst),
    D (D_in,): ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t``, ``y_t = h_t C_t + D x_t``."""
    if functorch_active():
        return selective_scan_reference(x, dt, A, B, C, D)
    return _SelectiveScan.apply(x, dt, A, B, C, D)


# -- the fused kernel (CUDA only) -------------------------------------------------------------
def scan_kernel():
    """mamba_ssm's ``selective_scan_fn``, or None (reason in ``_cache['reason']``). Looked up once,
    and only when CUDA is available: on a CPU machine mamba_ssm is never imported."""
    if "scan" not in _cache:
        if not torch.cuda.is_available():
            _cache["scan"], _cache["reason"] = None, "CUDA is not available on this machine"
        else:
            try:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
                _cache["scan"], _cache["reason"] = selective_scan_fn, ""
            except Exception as exc:  # the shells on CPU machines, or a broken build
                _cache["scan"], _cache["reason"] = None, (
                    f"mamba_ssm's selective_scan_fn does not import ({type(exc).__name__}: {exc}); install the "
                    f"cuda extra with pip install --no-build-isolation -e '.[cuda]'")
    return _cache["scan"]


def fused_layer_forward(layer: "Mamba1Layer", h: torch.Tensor) -> torch.Tensor:
    """``h + block(RMSNorm(h))`` on the kernels (no hook point active)."""
    d_inner, rank, nst = layer.d_inner, layer.dt_rank, layer.d_state
    x, z = layer.in_proj(layer.norm(h)).split([d_inner, d_inner], dim=-1)
    if fused.kernels() is not None:
        x = fused.causal_conv(x, layer.conv_weight, layer.conv_bias, silu=True)
    else:
        x = causal_conv(x, layer.conv_weight, layer.conv_bias, silu=True)
    dt, B, C = layer.x_proj(x).split([rank, nst, nst], dim=-1)
    dt = F.linear(dt, layer.dt_proj.weight)                      # bias and softplus inside the kernel
    y = scan_kernel()(x.transpose(1, 2), dt.transpose(1, 2), -torch.exp(layer.A_log.float()),
                      B.transpose(1, 2), C.transpose(1, 2), layer.D.float(), z=z.transpose(1, 2),
                      delta_bias=layer.dt_proj.bias.float(), delta_softplus=True)
    return h + layer.out_proj(y.transpose(1, 2).to(h.dtype))


def kernels_allowed(backend: str, x: torch.Tensor) -> tuple[bool, str]:
    if backend == "torch":
        return False, "backend='torch'"
    if backend == "fused":
        fused.kernels_allowed(backend, x)  # a CPU input: the same error as every architecture
        return True, "backend='fused'"
    if not x.is_cuda:
        return False, f"backend='auto' with a {x.device.type} input"
    if scan_kernel() is None:
        return False, f"backend='auto', but {_cache['reason']}"
    return True, "backend='auto' with a CUDA input and mamba_ssm's selective scan installed"


# -- the layer ---------------------------------------------------------------------------------
class Mamba1Layer(nn.Module):
    """One Mamba1 block with its pre-norm and residual add. Sites (relative to ``layers.{i}``):
    conv.out, ssm.x, ssm.B, ssm.C, ssm.dt, ssm.matrix, ssm.y, out; and ``resid.{i}``.

    ``path`` and ``path_reason`` say which compute path the last call took and why;
    ``force_path = "modular"`` pins the plain-autograd path, ``"scan"`` the eager scan (tests and
    benchmarks compare the paths)."""

    def __init__(self, config: dict, index: int):
        super().__init__()
        c = config
        d = c["d_model"]
        self.index, self.backend = index, c["backend"]
        self.d_inner, self.d_state = c["expand"] * d, c["d_state"]
        self.dt_rank = dt_rank(c)
        d_inner, width = self.d_inner, c["conv_width"]
        self.norm = RMSNorm(d, c["norm_eps"])
        self.in_proj = nn.Linear(d, 2 * d_inner, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(d_inner, width))  # gamma init, fan-in K
        if c["conv_bias"]:
            bound = 1 / math.sqrt(width)  # nn.Conv1d's default bias init for a depthwise conv
            self.conv_bias = nn.Parameter(torch.empty(d_inner).uniform_(-bound, bound))
        else:
            self.conv_bias = None
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        # mamba_ssm's Mamba: dt log-uniform in [dt_min, dt_max] through the inverse softplus
        dt = torch.exp(torch.rand(d_inner) * (math.log(c["dt_max"]) - math.log(c["dt_min"]))
                       + math.log(c["dt_min"])).clamp(min=c["dt_init_floor"])
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D real: A = 1..d_state in every channel
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(d_inner, d, bias=False)

        self.hook_conv = HookPoint("conv.out")
        self.hook_x = HookPoint("ssm.x")
        self.hook_B = HookPoint("ssm.B")
        self.hook_C = HookPoint("ssm.C")
        self.hook_dt = HookPoint("ssm.dt")
        self.hook_matrix = HookPoint("ssm.matrix")
        self.hook_y = HookPoint("ssm.y")
        self.hook_out = HookPoint("out")
        self.hook_resid = HookPoint(f"resid.{index}", absolute=True)
        self._hook_list = [m for m in self.modules() if isinstance(m, HookPoint)]
        self.force_path: str | None = None
        self.path: str | None = None
        self.path_reason = "not called yet"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        path, reason = self.choose_path(h)
        if path != self.path or reason != self.path_reason:
            log.debug("layers.%d of Mamba1: %s path (%s)", self.index, path, reason)
            self.path, self.path_reason = path, reason
        if path == "fused":
            return fused_layer_forward(self, h)
        return self.forward_modular(h, scan=path in ("scan", "compiled"), compiled=path == "compiled")

    def choose_path(self, h: torch.Tensor) -> tuple[str, str]:
        """(path, why): "fused", "compiled", "scan" or "modular" (see the module docstring)."""
        if any(hp.active for hp in self._hook_list):
            return "modular", "a hook point of this layer is active"
        if functorch_active():
            return "modular", "inside a torch.func transform"
        if self.force_path in ("modular", "scan"):
            return self.force_path, "forced (layer.force_path)"
        kernels, why = kernels_allowed(self.backend, h)
        if kernels:
            return "fused", why
        return s6_compiled.serves(h, self.d_inner * self.d_state) or ("scan", why)

    def forward_modular(self, h: torch.Tensor, scan: bool = False, compiled: bool = False) -> torch.Tensor:
        """The block, equation by equation, through every hook point (``scan``: the scan's
        autograd Function for the recurrence, used when no hook point is active; ``compiled``:
        its compiled version, the eager one if compiling fails)."""
        d_inner, nst = self.d_inner, self.d_state
        x, z = self.in_proj(self.norm(h)).split([d_inner, d_inner], dim=-1)
        conv = self.hook_conv(causal_conv(x, self.conv_weight, self.conv_bias, silu=True))
        x = self.hook_x(conv)
        dt, B, C = self.x_proj(conv).split([self.dt_rank, nst, nst], dim=-1)
        B, C = self.hook_B(B), self.hook_C(C)
        dt = self.hook_dt(F.softplus(self.dt_proj(dt)))
        A = -torch.exp(self.A_log)
        # under bf16 autocast the scan runs in fp32 (as mamba_ssm's selective scan computes)
        x, dt, B, C = (at_least_fp32(t) for t in (x, dt, B, C))
        with full_precision(h.device.type):
            if self.hook_matrix.active:
                S = self.hook_matrix(s6_matrix(dt, A, B, C))
                y = apply_s6_matrix(S, x, dt, self.D)
            elif scan:
                B, C = B.contiguous(), C.contiguous()
                y = s6_compiled.try_compiled_scan(x, dt, A, B, C, self.D) if compiled else None
                if y is None:
                    y = _SelectiveScan.apply(x, dt, A, B, C, self.D)
            else:
                y = selective_scan_reference(x, dt, A, B, C, self.D)
        y = self.hook_y(y)
        out = self.out_proj(y * F.silu(z))
        return self.hook_resid(h + self.hook_out(out))


class Mamba1Model(TokenModel):
    """Mamba1 language model: embedding (+ positional encoding) -> Mamba1 layers -> RMSNorm -> unembed."""

    def __init__(self, config: dict):
        layers = [Mamba1Layer(config, i) for i in range(config["n_layers"])]
        super().__init__(config, layers, "rmsnorm", config["norm_eps"])
        self.init_weights(config["gamma"])
        self.name_hook_points()

    def init_weights(self, gamma: float) -> None:
        """The init rate gamma on every weight of two or more dimensions but A_log (S4D real)."""
        init_gamma_(self, gamma, skip=("A_log",))

    def conv_kernels(self) -> list[torch.Tensor]:
        """Per layer, the short convolution's kernel (channels = D_in, width)."""
        return [layer.conv_weight.detach().clone() for layer in self.layers]


def dt_rank(config: dict) -> int:
    return math.ceil(config["d_model"] / 16) if config["dt_rank"] == "auto" else config["dt_rank"]


@dataclass
class Mamba1Config(ModelConfig):
    """Mamba1; every setting lands in ``model.config``. See the module docstring."""

    d_state: int = 16
    expand: int = 2
    dt_rank: int | str = "auto"
    conv_width: int = 4
    conv_bias: bool = True
    pos_enc: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_choice(self.backend, "backend", BACKENDS)
        if self.backend == "fused" and scan_kernel() is None:
            raise ConfigError("backend", f"'fused' needs CUDA and the cuda extra, but {_cache['reason']}; "
                                         "use backend='torch' or 'auto'")
        for setting in ("d_state", "expand", "conv_width"):
            check_int(setting, getattr(self, setting), minimum=1)
        if self.dt_rank != "auto":
            check_int("dt_rank", self.dt_rank, minimum=1)
        require(isinstance(self.conv_bias, bool), "conv_bias", f"must be true or false, got {self.conv_bias!r}")
        require(isinstance(self.pos_enc, bool), "pos_enc", f"must be true or false, got {self.pos_enc!r}")
        require(0 < self.dt_min <= self.dt_max, "dt_min",
                f"need 0 < dt_min <= dt_max, got {self.dt_min!r}, {self.dt_max!r}")
        require(self.dt_init_floor >= 0, "dt_init_floor", f"must be >= 0, got {self.dt_init_floor!r}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")


build_mamba1 = model_factory(Mamba1Config, Mamba1Model)

VARIANTS: dict[str, tuple[dict, str]] = {
    "mamba1": ({}, "Mamba1 (S6): selective scan per channel, A (D_in, d_state), conv + SiLU, SiLU(z) gate"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("state-space-model", "mamba")
ARCHITECTURES = presets(build_mamba1, VARIANTS)
