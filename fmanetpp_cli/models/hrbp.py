"""The HRBP block of FMA-Net++ (arXiv 2512.04390, Sec. 3.4; "HRBA" in the paper's v2) and its helpers.

One block refines every frame of a sequence at once (no recurrence). For frame ``i`` it

1. refines the frame's own features with an RDB (kept from FMA-Net's FRMA block; see ``use_rdb``),
2. warps the features of frames ``i - 1`` and ``i + 1`` to frame ``i`` with ``n`` flow / occlusion-mask
   pairs per direction (channel group ``k`` of ``C / n`` channels follows flow ``k``),
3. fuses ``[F_i, F_{i-1 -> i}, F_{i+1 -> i}]`` with a convolution,
4. updates the flow-mask pairs residually from ``[f_i, fused features]``,
5. runs multi-attention on the fused features (MDTA self-attention + GDFN; in Net_R also the
   degradation-aware cross-attention whose query comes from the degradation kernels, + GDFN),
6. applies the exposure modulation (ETM) with the frame's exposure embedding.

Temporal reach: a block mixes each frame only with ``i +- 1``, so ``M`` stacked blocks see ``+- M`` frames.

**Sequence ends.** Frame 0 has no ``i - 1`` and frame ``T - 1`` no ``i + 1`` (the paper does not say what
to do). ``edge_mode="replicate"`` (default) uses the frame's own features in place of the missing
neighbour, which is what warping a replicated edge frame with zero flow and a fully open mask gives;
``edge_mode="mask"`` uses zeros (a fully closed occlusion mask). The flow-mask channels of a missing
direction are still computed and updated (so every frame has the same tensor shapes) but never used for
warping. The rule looks only at the position inside the tensor it is given: the caller (the video
pipeline) feeds chunks with enough context and keeps the inner frames, where the rule never applies.

Layout: per-frame tensors with time folded into the batch, ``[B*T, C, H, W]``, frame index fastest
within each batch element (``rearrange(x, "b c t h w -> (b t) c h w")``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.models.ete import ExposureModulation
from fmanetpp_cli.models.layers import RDB, Attention, FeedForward, LayerNorm, per_frame, pointwise
from fmanetpp_cli.models.warp import multi_flow_warp

EDGE_MODES = ("replicate", "mask")


class MultiAttentionLayer(nn.Module):
    """Pre-LN multi-attention of an HRBP block (Fig. 4b).

    ``Z = F + SelfAttn(LN(F)); Z = Z + FFN(LN(Z))`` and, when degradation-aware,
    ``Z = Z + DAAttn(LN(Z), query=k); Z = Z + FFN(LN(Z))``. Both attentions are Restormer MDTA (channel
    attention over the whole frame), the FFNs are GDFN. As in FMA-Net, the DA query is used without
    normalisation.

    Args:
        dim: channels.
        num_heads: attention heads.
        ffn_expansion_factor: GDFN expansion.
        layernorm_type: ``"WithBias"`` or ``"BiasFree"``.
        bias: bias of the projections.
        degradation_aware: add the DA cross-attention and its FFN (Net_R).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        layernorm_type: str,
        bias: bool,
        degradation_aware: bool,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
        self.attn = Attention(dim=dim, num_heads=num_heads, bias=bias)
        self.norm2 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
        self.ffn1 = FeedForward(dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)
        self.degradation_aware = degradation_aware
        if degradation_aware:
            self.norm3 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
            self.da_attn = Attention(dim=dim, num_heads=num_heads, bias=bias)
            self.norm4 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
            self.ffn2 = FeedForward(dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)

    def forward(self, x: Tensor, kernel_query: Tensor | None = None) -> Tensor:
        """Apply self-attention (+ DA attention) with their FFNs.

        Shapes:
            x: ``[N, C, H, W]``.
            kernel_query: ``[N, C, H, W]``; required when degradation-aware, ignored otherwise.
            return: ``[N, C, H, W]``.
        """
        x = self.attn.residual(x, self.norm1)  # x + attn(norm1(x)), in bands without autograd
        x = self.ffn1.residual(x, self.norm2)
        if self.degradation_aware:
            if kernel_query is None:
                raise ConfigError("a degradation-aware attention layer needs the kernel query")
            x = self.da_attn.residual(x, self.norm3, kernel_query)
            x = self.ffn2.residual(x, self.norm4)
        return x


def warp_neighbours(
    features: Tensor, flow_mask: Tensor, *, num_frames: int, num_flow: int, edge_mode: str
) -> tuple[Tensor, Tensor]:
    """Warp each frame's two neighbours to it: ``F_{i-1 -> i}`` and ``F_{i+1 -> i}``.

    Channels ``[0, 3n)`` of ``flow_mask`` are the flow-masks of frame ``i`` towards ``i - 1``, channels
    ``[3n, 6n)`` towards ``i + 1``; each triplet is ``(dx, dy, mask logit)`` in LR pixels (backward warp:
    ``out(p) = neighbour(p + flow(p)) * sigmoid(logit)``). Only existing neighbours are warped; missing
    ones (sequence ends) follow ``edge_mode`` (see the module docstring).

    Shapes:
        features: ``[B*T, C, H, W]``.
        flow_mask: ``[B*T, 6n, H, W]``.
        return: two ``[B*T, C, H, W]`` tensors (from ``i - 1`` and from ``i + 1``).
    """
    N, C, H, W = features.shape
    T = num_frames
    B = N // T
    n3 = 3 * num_flow
    feat = features.view(B, T, C, H, W)
    edge = feat if edge_mode == "replicate" else torch.zeros_like(feat)
    if T == 1:
        return edge.reshape(N, C, H, W), edge.reshape(N, C, H, W)
    fm = flow_mask.view(B, T, 2 * n3, H, W)
    # Frames 1..T-1 look back at 0..T-2; frames 0..T-2 look ahead at 1..T-1.
    src_prev = feat[:, :-1].reshape(B * (T - 1), C, H, W)
    src_next = feat[:, 1:].reshape(B * (T - 1), C, H, W)
    fm_prev = fm[:, 1:, :n3].reshape(B * (T - 1), n3, H, W)
    fm_next = fm[:, :-1, n3:].reshape(B * (T - 1), n3, H, W)
    from_prev = multi_flow_warp(src_prev, fm_prev, num_flow=num_flow).view(B, T - 1, C, H, W)
    from_next = multi_flow_warp(src_next, fm_next, num_flow=num_flow).view(B, T - 1, C, H, W)
    from_prev = torch.cat((edge[:, :1], from_prev), dim=1)  # [B, T, C, H, W]
    from_next = torch.cat((from_next, edge[:, -1:]), dim=1)  # [B, T, C, H, W]
    return from_prev.view(N, C, H, W), from_next.view(N, C, H, W)


class HRBPBlock(nn.Module):
    """One HRBP refinement step ``j -> j + 1`` for every frame of a sequence in parallel.

    Args:
        dim: feature channels ``C`` (divisible by ``num_flow`` and ``num_heads``).
        num_flow: flow-mask pairs per direction ``n``.
        growth_rate: RDB growth rate.
        num_dense_layer: RDB dense layers.
        num_transformer_block: multi-attention layers stacked in the block.
        num_heads: attention heads.
        ffn_expansion_factor: GDFN expansion.
        layernorm_type: ``"WithBias"`` or ``"BiasFree"``.
        bias: bias of the convolutions and projections.
        use_rdb: refine ``F_i`` with an RDB before warping (FMA-Net's FRMA step 1; the FMA-Net++ text
            does not list it).
        fuse_kernel_size: kernel of the fusion conv ``3C -> C`` (1 as in FMA-Net's ``conv_Fw``).
        degradation_aware: add the DA cross-attention (Net_R); the block then takes the shared kernel
            features and turns them into its own query with ``conv_kd``.
        kernel_query_size: kernel of ``conv_kd`` (``C -> C``).
        exposure_dim: embedding size ``d_u``; 0 disables the ETM (the paper's "w/o ETE").
        etm_hidden: hidden width of the ETM MLP.
        edge_mode: ``"replicate"`` or ``"mask"`` (sequence-end rule).
        update_flow: build the flow-update conv; Net_R's last block has none, because nothing reads the
            flows it would produce (the conv would be a parameter that never gets a gradient).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_flow: int,
        growth_rate: int,
        num_dense_layer: int,
        num_transformer_block: int,
        num_heads: int,
        ffn_expansion_factor: float,
        layernorm_type: str,
        bias: bool,
        use_rdb: bool,
        fuse_kernel_size: int,
        degradation_aware: bool,
        kernel_query_size: int,
        exposure_dim: int,
        etm_hidden: int,
        edge_mode: str,
        update_flow: bool = True,
    ) -> None:
        super().__init__()
        if edge_mode not in EDGE_MODES:
            raise ConfigError(f"edge_mode must be one of {EDGE_MODES}, got {edge_mode!r}")
        self.num_flow = num_flow
        self.edge_mode = edge_mode
        self.rdb = (
            RDB(dim=dim, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias)
            if use_rdb
            else None
        )
        self.conv_fuse = nn.Conv2d(3 * dim, dim, fuse_kernel_size, padding=fuse_kernel_size // 2, bias=bias)
        n6 = 6 * num_flow
        self.conv_f: nn.Sequential | None = None
        if update_flow:
            self.conv_f = nn.Sequential(
                nn.Conv2d(n6 + dim, n6, 3, padding=1, bias=bias),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(n6, n6, 3, padding=1, bias=bias),
            )
        self.conv_kd = (
            nn.Conv2d(dim, dim, kernel_query_size, padding=kernel_query_size // 2, bias=bias)
            if degradation_aware
            else None
        )
        self.attn_layers = nn.ModuleList(
            [
                MultiAttentionLayer(
                    dim=dim,
                    num_heads=num_heads,
                    ffn_expansion_factor=ffn_expansion_factor,
                    layernorm_type=layernorm_type,
                    bias=bias,
                    degradation_aware=degradation_aware,
                )
                for _ in range(num_transformer_block)
            ]
        )
        self.etm = (
            ExposureModulation(exposure_dim=exposure_dim, hidden=etm_hidden, dim=dim)
            if exposure_dim > 0
            else None
        )

    def forward(
        self,
        features: Tensor,
        flow_mask: Tensor,
        *,
        num_frames: int,
        exposure: Tensor | None = None,
        kernel_features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Refine features and flow-masks of every frame.

        Args:
            features: ``F^j`` of every frame.
            flow_mask: ``f^j``: per frame, ``n`` ``(dx, dy, mask logit)`` triplets towards ``i - 1``
                then ``n`` towards ``i + 1``.
            num_frames: ``T`` (to unfold the batch).
            exposure: per-frame embeddings ``u``; needed when the block has an ETM, ignored otherwise.
            kernel_features: Net_R's features of the degradation kernels (DA blocks only).

        Returns:
            ``(F^{j+1}, f^{j+1})``.

        Shapes:
            features: ``[B*T, C, H, W]``.
            flow_mask: ``[B*T, 6n, H, W]``.
            exposure: ``[B*T, d_u]``.
            kernel_features: ``[B*T, C, H, W]``.
            return: ``([B*T, C, H, W], [B*T, 6n, H, W])``.
        """
        if self.rdb is not None:
            features = per_frame(self.rdb, features)
        from_prev, from_next = warp_neighbours(
            features, flow_mask, num_frames=num_frames, num_flow=self.num_flow, edge_mode=self.edge_mode
        )
        if self.conv_kd is not None and kernel_features is None:
            raise ConfigError("a degradation-aware HRBP block needs the kernel features")
        if self.etm is not None and exposure is None:
            raise ConfigError("an HRBP block with exposure modulation needs the exposure embeddings")
        both = per_frame(self._refine, features, from_prev, from_next, flow_mask, kernel_features, exposure)
        n6 = flow_mask.shape[1]
        return both[:, n6:], both[:, :n6]

    def _refine(
        self,
        features: Tensor,
        from_prev: Tensor,
        from_next: Tensor,
        flow_mask: Tensor,
        kernel_features: Tensor | None,
        exposure: Tensor | None,
    ) -> Tensor:
        """Steps 3-6 for some frames (each frame on its own), flow-masks and features in one tensor.

        Shapes:
            features, from_prev, from_next: ``[N, C, H, W]``.
            flow_mask: ``[N, 6n, H, W]``.
            kernel_features: ``[N, C, H, W]`` or None; exposure: ``[N, d_u]`` or None.
            return: ``[N, 6n + C, H, W]``: ``f^{j+1}`` then ``F^{j+1}``.
        """
        both = torch.cat((features, from_prev, from_next), dim=1)  # [N, 3C, H, W]
        fuse = self.conv_fuse
        pointwise_fuse = fuse.kernel_size == (1, 1)
        fused = pointwise(both, fuse.weight, fuse.bias) if pointwise_fuse else fuse(both)  # [N, C, H, W]
        if self.conv_f is not None:
            flow_mask = flow_mask + self.conv_f(torch.cat((flow_mask, fused), dim=1))  # [N, 6n, H, W]
        query = None if self.conv_kd is None else self.conv_kd(kernel_features)
        out = fused
        for layer in self.attn_layers:
            out = layer(out, query)
        if self.etm is not None:
            out = self.etm(out, exposure)
        return torch.cat((flow_mask, out), dim=1)  # [N, 6n + C, H, W]
