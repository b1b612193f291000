"""DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length"): the delta-rule linear attention of flash-linear-attention's ``DeltaNet`` layer,
in the Transformer block of ``transformer.py`` (attention replaced by the delta rule), with and
without its short convolution (``deltanet`` / ``deltanet-noconv``).

One pre-norm layer, for the residual stream h (N, S, d_model), H heads of size d = d_model / H::

    q, k, v   = qkv_proj(RMSNorm(h))                  d_model each
    deltanet:        q, k, v = SiLU(Conv1d(q, k, v))  depthwise, causal, width 4, no bias  -> conv.out
    deltanet-noconv: q, k, v = SiLU(q), SiLU(k), SiLU(v)
    q, k      = q / |q|, k / |k| per head (L2, eps 1e-6)                                 -> attn.q, attn.k
    v                                                                                    -> attn.v
    beta      = sigmoid(b_proj(RMSNorm(h)))           one per head                       -> attn.beta
    S_t       = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,   S_0 = 0   (d x d per head)
    o_t       = S_t q_t / sqrt(d)                                                        -> ssm.matrix
    attn      = o_proj(RMSNorm_head(o))           (the norm's scale is shared by the heads) -> attn.out
    mlp       = W2 SiLU(W1 RMSNorm(h + attn))     hidden d_ff = d_model                  -> mlp.out
    h        <- h + (attn + mlp)                                                         -> out, resid.{i}

The mixer is fla's ``DeltaNet`` with its defaults (``use_beta``, ``qk_activation='silu'``,
``qk_norm='l2'``, ``use_gate=False``, ``conv_bias=False``, ``expand_k = expand_v = 1``, q scaled by
1/sqrt(d) as its ``chunk_delta_rule``); the block around it is the Transformer's of this package
(pre-norm, SiLU FFN of hidden d_model, untied unembedding, one head by default), so that
``deltanet`` differs from ``transformer`` only in the token mixer and ``deltanet-noconv`` from
``deltanet`` only in the short convolution. RMSNorm everywhere (eps 1e-5), as fla's models. No
positional encoding (``pos_enc`` adds the learned one).

The delta rule in closed form (the WY/UT form of the paper, §3). With u_t = beta_t (v_t - S_{t-1} k_t),
S_t = sum_{s<=t} u_s k_s^T, so over a chunk that starts from the state P (rows are time)::

    (I + tril(diag(beta) K K^T, -1)) U = diag(beta) (V - K P),    O = Q P + tril(Q K^T) U,
    P' = P + K^T U

and from S_0 = 0 over the whole sequence the output is linear in the values::

    O = M V,   M = tril(Q K^T) (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta)    (per head)

``layers.{i}.ssm.matrix`` holds M, (N, heads, S, S), lower-triangular: entry (t, s) is how much
o_t reads v_s, exactly (M depends on the keys and betas of every token up to t, through the
inverse). It is materialised only while hooked, and the layer then computes O = M V from the
(possibly edited) hook value, so blocking M[t, s] removes v_s from o_t exactly; k_s and beta_s still
shape the other entries of M (an edit cuts the value path, as on an SSM's S).

Compute paths (same weights, same function; tests compare them with a step-by-step recurrence):

* fused (CUDA, backend "auto" or "fused", flash-linear-attention installed: the ``cuda`` extra):
  fla's ``chunk_delta_rule`` on the normalised q, k (scale 1/sqrt(d) passed to it), v and beta,
  looked up lazily and only when CUDA is available (never imported on a CPU);
* torch: the chunked form above (chunks of ``chunk_size`` = 64 tokens: one chunk, no state
  passing, at the papers' lengths), a batched triangular solve per chunk;
* the matrix form (O = M V) whenever ``ssm.matrix`` is hooked.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from achilles import AchillesError, ConfigError, HookPoint, ModelConfig, check_int, model_factory

from .common import BACKENDS, TokenModel, check_choice, presets, require
from .ops import RMSNorm, at_least_fp32, causal_conv, full_precision, functorch_active

__all__ = ["ARCHITECTURES", "DeltaNetConfig", "DeltaNetLayer", "DeltaNetModel", "build_deltanet",
           "delta_rule_chunked", "delta_rule_matrix", "l2_normalize"]

L2_EPS = 1e-6  # fla's l2norm: x * rsqrt(sum x^2 + 1e-6)

_cache: dict[str, object] = {}


# -- the delta rule ----------------------------------------------------------------------------
def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + L2_EPS)


def _unit_lower(k: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """I + tril(diag(beta) K K^T, -1) for k (..., S, d), beta (..., S)."""
    length = k.shape[-2]
    a = (torch.matmul(k, k.transpose(-1, -2)) * beta.unsqueeze(-1)).tril(-1)
    return a + torch.eye(length, dtype=k.dtype, device=k.device)


def delta_rule_matrix(q: torch.Tensor, k: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """M (N, H, S, S) with O = M V: q (already scaled), k (N, H, S, d), beta (N, H, S)."""
    length = q.shape[-2]
    eye = torch.eye(length, dtype=q.dtype, device=q.device).expand(*q.shape[:-2], length, length)
    inverse = torch.linalg.solve_triangular(_unit_lower(k, beta), eye, upper=False, unitriangular=True)
    return torch.matmul(torch.matmul(q, k.transpose(-1, -2)).tril(), inverse * beta.unsqueeze(-2))


def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                       chunk_size: int) -> torch.Tensor:
    """O (N, H, S, dv) of the delta rule from S_0 = 0: q (already scaled), k (N, H, S, dk),
    v (N, H, S, dv), beta (N, H, S); chunks of ``chunk_size`` with the state passed between them."""
    length = q.shape[-2]
    state = None
    outs = []
    for start in range(0, length, chunk_size):
        part = slice(start, min(start + chunk_size, length))
        qc, kc, vc, bc = q[..., part, :], k[..., part, :], v[..., part, :], beta[..., part]
        rhs = vc if state is None else vc - torch.matmul(kc, state)
        u = torch.linalg.solve_triangular(_unit_lower(kc, bc), rhs * bc.unsqueeze(-1), upper=False,
                                          unitriangular=True)
        o = torch.matmul(torch.matmul(qc, kc.transpose(-1, -2)).tril(), u)
        if state is not None:
            o = o + torch.matmul(qc, state)
        outs.append(o)
        if start + chunk_size < length:
            update = torch.matmul(kc.transpose(-1, -2), u)
            state = update if state is None else state + update
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-2)


# -- flash-linear-attention (CUDA only) ----------------------------------------------------------
def fla_kernel():
    """fla's ``chunk_delta_rule``, or None (reason in ``_cache['reason']``). Looked up once, and
    only when CUDA is available: on a CPU machine fla is never imported."""
    if "fla" not in _cache:
        if not torch.cuda.is_available():
            _cache["fla"], _cache["reason"] = None, "CUDA is not available on this machine"
        else:
            try:
                # the distribution is flash-linear-attention (the cuda extra), its import name ``fla``;
                # imported by name because tests/test_packaging.py maps an imported module to its
                # distribution only when installed, and it is installed on GPU machines only
                module = importlib.import_module("fla.ops.delta_rule")
                _cache["fla"], _cache["reason"] = module.chunk_delta_rule, ""
            except Exception as exc:
                _cache["fla"], _cache["reason"] = None, (
                    f"flash-linear-attention does not import ({type(exc).__name__}: {exc}); install the cuda "
                    f"extra with pip install --no-build-isolation -e '.[cuda]'")
    return _cache["fla"]


def kernels_allowed(backend: str, x: torch.Tensor) -> tuple[bool, str]:
    if backend == "torch":
        return False, "backend='torch'"
    if backend == "fused":
        if not x.is_cuda:
            raise AchillesError(f"backend='fused' needs the model and its input on a CUDA device, got a "
                                f"{x.device.type} tensor; move the model with .cuda() or use backend='auto'")
        return True, "backend='fused'"
    if not x.is_cuda:
        return False, f"backend='auto' with a {x.device.type} input"
    if fla_kernel() is None:
        return False, f"backend='auto', but {_cache['reason']}"
    return True, "backend='auto' with a CUDA input and flash-linear-attention installed"


# -- the layer -----------------------------------------------------------------------------------
class DeltaNetLayer(nn.Module):
    """Pre-norm delta-rule mixer + SiLU FFN. Sites (relative to ``layers.{i}``): [conv.out], attn.q,
    attn.k, attn.v, attn.beta, ssm.matrix, attn.out, mlp.out, out; and ``resid.{i}``.
    ``path`` / ``path_reason``: the compute path of the last call ("fused", "chunked", "matrix")."""

    def __init__(self, config: dict, index: int):
        super().__init__()
        c = config
        d, self.n_heads = c["d_model"], c["n_heads"]
        self.head_dim = d // self.n_heads
        self.backend, self.chunk_size = c["backend"], c["chunk_size"]
        self.scale = self.head_dim ** -0.5
        d_ff = c["d_ff"] or d
        self.norm1 = RMSNorm(d, c["norm_eps"])
        self.qkv_proj = nn.Linear(d, 3 * d, bias=False)
        self.b_proj = nn.Linear(d, self.n_heads, bias=False)
        self.qkv_conv = c["qkv_conv"]
        if self.qkv_conv:
            width = c["conv_width"]
            self.conv_weight = nn.Parameter(torch.empty(3 * d, width))  # gamma init, fan-in K
            if c["conv_bias"]:
                bound = 1 / math.sqrt(width)
                self.conv_bias = nn.Parameter(torch.empty(3 * d).uniform_(-bound, bound))
            else:
                self.conv_bias = None
            self.hook_conv = HookPoint("conv.out")
        self.hook_q = HookPoint("attn.q")
        self.hook_k = HookPoint("attn.k")
        self.hook_v = HookPoint("attn.v")
        self.hook_beta = HookPoint("attn.beta")
        self.hook_matrix = HookPoint("ssm.matrix")
        self.o_norm = RMSNorm(self.head_dim, c["norm_eps"])
        self.o_proj = nn.Linear(d, d, bias=False)
        self.hook_attn_out = HookPoint("attn.out")
        self.norm2 = RMSNorm(d, c["norm_eps"])
        self.ff_in = nn.Linear(d, d_ff, bias=False)
        self.ff_out = nn.Linear(d_ff, d, bias=False)
        self.hook_mlp_out = HookPoint("mlp.out")
        self.hook_out = HookPoint("out")
        self.hook_resid = HookPoint(f"resid.{index}", absolute=True)
        self._hook_list = [m for m in self.modules() if isinstance(m, HookPoint)]
        self.path: str | None = None
        self.path_reason = "not called yet"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        attn = self.hook_attn_out(self.mix(self.norm1(h)))
        mlp = self.hook_mlp_out(self.ff_out(F.silu(self.ff_in(self.norm2(h + attn)))))
        return self.hook_resid(h + self.hook_out(attn + mlp))

    def choose_path(self, x: torch.Tensor) -> tuple[str, str]:
        if self.hook_matrix.active:
            return "matrix", "ssm.matrix is hooked (O = M V from the materialised M)"
        hooked = any(hp.active for hp in self._hook_list)
        kernels, why = kernels_allowed(self.backend, x)
        if kernels and not hooked and not functorch_active():
            return "fused", why
        if kernels:
            why = "a hook point of this layer is active" if hooked else "inside a torch.func transform"
        return "chunked", why

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """The delta-rule mixer of the normalised stream x (N, S, d_model), before ``attn.out``."""
        n, length, d = x.shape
        path, self.path_reason = self.choose_path(x)
        self.path = path
        qkv = self.qkv_proj(x)
        if self.qkv_conv:
            qkv = self.hook_conv(causal_conv(qkv, self.conv_weight, self.conv_bias, silu=True))
        else:
            qkv = F.silu(qkv)
        heads, hd = self.n_heads, self.head_dim
        q, k, v = torch.split(qkv, [d, d, d], dim=-1)
        q = self.hook_q(l2_normalize(q.reshape(n, length, heads, hd)).reshape(n, length, d))
        k = self.hook_k(l2_normalize(k.reshape(n, length, heads, hd)).reshape(n, length, d))
        v = self.hook_v(v)
        beta = self.hook_beta(torch.sigmoid(self.b_proj(x)))                     # (N, S, H)
        if path == "fused":
            o, _ = fla_kernel()(q=q.reshape(n, length, heads, hd).contiguous(),
                                k=k.reshape(n, length, heads, hd).contiguous(),
                                v=v.reshape(n, length, heads, hd).contiguous(), beta=beta.contiguous(),
                                scale=self.scale, output_final_state=False)
            o = o.to(x.dtype)                                                     # (N, S, H, d)
        else:
            qh, kh, vh = (t.reshape(n, length, heads, hd).transpose(1, 2) for t in (q * self.scale, k, v))
            bh = beta.transpose(1, 2)                                             # (N, H, S)
            # under bf16 autocast the delta rule (triangular solves, the state) runs in fp32
            qh, kh, vh, bh = (at_least_fp32(t) for t in (qh, kh, vh, bh))
            with full_precision(x.device.type):
                if path == "matrix":
                    M = self.hook_matrix(delta_rule_matrix(qh, kh, bh))
                    o = torch.matmul(M, vh)
                else:
                    o = delta_rule_chunked(qh, kh, vh, bh, self.chunk_size)
            o = o.transpose(1, 2)                                                 # (N, S, H, d)
        return self.o_proj(self.o_norm(o).reshape(n, length, d))


class DeltaNetModel(TokenModel):
    """DeltaNet language model: embedding (+ positional encoding) -> layers -> RMSNorm -> unembed."""

    def __init__(self, config: dict):
        layers = [DeltaNetLayer(config, i) for i in range(config["n_layers"])]
        super().__init__(config, layers, "rmsnorm", config["norm_eps"])
        self.init_weights(config["gamma"])
        self.name_hook_points()

    def conv_kernels(self) -> list[torch.Tensor]:
        """Per layer, the q/k/v convolution's kernel (channels = 3 d_model, width); [] without one."""
        return [layer.conv_weight.detach().clone() for layer in self.layers if layer.qkv_conv]


@dataclass
class DeltaNetConfig(ModelConfig):
    """deltanet / deltanet-noconv; see the module docstring."""

    n_heads: int = 1
    qkv_conv: bool = True
    conv_width: int = 4
    conv_bias: bool = False
    d_ff: int | None = None
    pos_enc: bool = False
    chunk_size: int = 64
    norm_eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_choice(self.backend, "backend", BACKENDS)
        if self.backend == "fused" and fla_kernel() is None:
            raise ConfigError("backend", f"'fused' needs CUDA and flash-linear-attention (the cuda extra), but "
                                         f"{_cache['reason']}; use backend='torch' or 'auto'")
        check_int("n_heads", self.n_heads, minimum=1)
        require(self.d_model % self.n_heads == 0, "n_heads",
                f"{self.n_heads} heads do not divide d_model = {self.d_model}")
        for setting in ("conv_width", "chunk_size"):
            check_int(setting, getattr(self, setting), minimum=1)
        if self.d_ff is not None:
            check_int("d_ff", self.d_ff, minimum=1)
        for setting in ("qkv_conv", "conv_bias", "pos_enc"):
            value = getattr(self, setting)
            require(isinstance(value, bool), setting, f"must be true or false, got {value!r}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps!r}")


build_deltanet = model_factory(DeltaNetConfig, DeltaNetModel)

VARIANTS: dict[str, tuple[dict, str]] = {
    "deltanet": ({}, "DeltaNet: delta-rule linear attention (fla's layer), short conv + SiLU on q, k, v"),
    "deltanet-noconv": ({"qkv_conv": False}, "DeltaNet without the short convolution (SiLU only on q, k, v)"),
}

#: tags of these architectures on model cards and the Hub
FAMILY_TAGS = ("linear-attention", "deltanet")
ARCHITECTURES = presets(build_deltanet, VARIANTS)
