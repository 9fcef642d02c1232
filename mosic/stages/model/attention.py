"""xformers attention for timm ViTs (optional, CUDA only); PyTorch's SDPA is the default."""

from __future__ import annotations

import torch
from torch import nn


def use_xformers(model: nn.Module) -> int:
    """Route every timm ``Attention`` block through ``xformers.ops.memory_efficient_attention``.

    Returns how many blocks were switched. Raises a one-line error without xformers, or with
    an xformers whose kernels were built for another torch (they fail at the first call).
    """
    try:
        import xformers
        from xformers.ops import memory_efficient_attention
    except ImportError:
        raise RuntimeError(
            "--attention xformers needs xformers (pip install xformers matching your torch)"
        ) from None
    if not getattr(xformers, "_has_cpp_library", True):
        raise RuntimeError(
            f"--attention xformers: xformers {xformers.__version__} could not load its CUDA "
            f"kernels (built for another torch than {torch.__version__}); install the "
            "xformers build matching your torch, or use --attention sdpa"
        )
    from timm.models.vision_transformer import Attention

    def forward(
        self: Attention,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """timm's Attention.forward (timm 1.0) with xformers' kernel; x (B, N, C)."""
        if is_causal:
            raise NotImplementedError("causal attention is not used by mosic")
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)  # (B, N, heads, head_dim): xformers' layout
        q, k = self.q_norm(q), self.k_norm(k)
        out = memory_efficient_attention(q, k, v, attn_bias=attn_mask)
        out = self.norm(out.reshape(b, n, self.attn_dim))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))

    switched = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.forward = forward.__get__(module)
            switched += 1
    return switched
