"""FMA-Net's flow-guided recurrent multi-attention block (FRMA) and its stack, shared by Net_D and Net_R.

Module and parameter names are the official ones (``models/fmanet.py`` has the network-level description).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fmanetpp_cli.models.layers import (
    RDB,
    Attention,
    FeedForward,
    FrameConv3d,
    LayerNorm,
    repeat_frames,
    time_to_channels,
    to_channels_last,
)
from fmanetpp_cli.models.warp import multi_flow_warp


def conv_pair(cin: int, mid: int, cout: int, *, bias: bool) -> nn.Sequential:
    """``3x3`` per-frame conv, LeakyReLU(0.2), ``3x3`` per-frame conv (the official ``*_conv`` heads)."""
    return nn.Sequential(
        FrameConv3d(in_channels=cin, out_channels=mid, kernel_size=3, bias=bias),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        FrameConv3d(in_channels=mid, out_channels=cout, kernel_size=3, bias=bias),
    )


class MultiAttentionBlock(nn.Module):
    """Centre-frame cross-attention + FFN, and with ``is_da`` a second pair attending to degradation features.

    Args:
        dim: channels.
        num_heads: attention heads.
        layernorm_type: ``"WithBias"`` or ``"BiasFree"``.
        ffn_expansion_factor: FFN width factor.
        bias: conv biases.
        is_da: add the degradation-aware attention (Net_R).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        layernorm_type: str,
        ffn_expansion_factor: float,
        bias: bool,
        is_da: bool,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
        self.co_attn = Attention(dim=dim, num_heads=num_heads, bias=bias)
        self.norm2 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
        self.ffn1 = FeedForward(dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)
        if is_da:
            self.norm3 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
            self.da_attn = Attention(dim=dim, num_heads=num_heads, bias=bias)
            self.norm4 = LayerNorm(dim=dim, layernorm_type=layernorm_type)
            self.ffn2 = FeedForward(dim=dim, ffn_expansion_factor=ffn_expansion_factor, bias=bias)

    def forward(self, fw: Tensor, centre: Tensor, kd: Tensor | None) -> Tensor:
        """Refine the warped features ``fw``; queries come from the centre feature, then from ``kd``.

        Shapes:
            fw, centre, kd: ``[B, dim, H, W]``.
            return: ``[B, dim, H, W]``.
        """
        fw = fw + self.co_attn(self.norm1(fw), centre)
        fw = fw + self.ffn1(self.norm2(fw))
        if kd is not None:
            fw = fw + self.da_attn(self.norm3(fw), kd)
            fw = fw + self.ffn2(self.norm4(fw))
        return fw


class FRMA(nn.Module):
    """Flow-guided Recurrent Multi-Attention block: refine features and multi-flows, warp, fuse, attend.

    Args:
        dim, num_seq, growth_rate, num_dense_layer, num_flow, num_transformer_block, num_heads,
        layernorm_type, ffn_expansion_factor, bias: as in :class:`FMANetConfig`.
        is_da: degradation-aware (Net_R): also refines the degradation features ``kd``.
        is_first_f: the first block of Net_D, which predicts the flows from scratch.
        is_first_fw: the first block, which has no warped features ``fw`` yet.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_seq: int,
        growth_rate: int,
        num_dense_layer: int,
        num_flow: int,
        num_transformer_block: int,
        num_heads: int,
        layernorm_type: str,
        ffn_expansion_factor: float,
        bias: bool,
        is_da: bool,
        is_first_f: bool,
        is_first_fw: bool,
    ) -> None:
        super().__init__()
        self.num_seq = num_seq
        self.num_flow = num_flow
        self.rdb = RDB(dim=dim, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias)
        if is_da:
            self.rdb_KD = RDB(dim=dim, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias)
            self.conv_KD = nn.Conv2d(dim * num_seq, dim, kernel_size=1, bias=bias)
        fw_in = dim * num_seq if is_first_fw else dim + dim * num_seq
        self.conv_Fw = nn.Conv2d(fw_in, dim, kernel_size=1, bias=bias)
        f_in = dim * 2 if is_first_f else dim * 2 + 3 * num_flow
        self.conv_f = conv_pair(f_in, 3 * num_flow, 3 * num_flow, bias=bias)
        self.multi_attn_block = nn.ModuleList(
            [
                MultiAttentionBlock(
                    dim=dim,
                    num_heads=num_heads,
                    layernorm_type=layernorm_type,
                    ffn_expansion_factor=ffn_expansion_factor,
                    bias=bias,
                    is_da=is_da,
                )
                for _ in range(num_transformer_block)
            ]
        )

    def forward(
        self, feat: Tensor, fw: Tensor | None, f: Tensor | None, centre: Tensor, kd: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One FRMA step.

        Args:
            feat: per-frame features.
            fw: warped-and-fused features of the previous block (None in the first).
            f: multi-flow-masks ``(dx, dy, mask)`` x ``num_flow`` (None in Net_D's first block).
            centre: centre-frame features of the feature extractor (the attention query).
            kd: degradation features (Net_R only).

        Returns:
            ``(feat, fw, f)`` updated.

        Shapes:
            feat: ``[B*T, dim, H, W]``; fw, centre: ``[B, dim, H, W]``; f: ``[B*T, 3*num_flow, H, W]``;
            kd: ``[B*T, dim, H, W]``.
        """
        T = self.num_seq
        feat = self.rdb(feat)
        centre_t = repeat_frames(centre, T)  # [B*T, dim, H, W]
        if f is None:
            f = self.conv_f(torch.cat([centre_t, feat], dim=1))  # [B*T, 3n, H, W]
        else:
            warped = to_channels_last(multi_flow_warp(feat, f, num_flow=self.num_flow))
            f = f + self.conv_f(torch.cat([centre_t, f, warped], dim=1))
        warped = multi_flow_warp(feat, f, num_flow=self.num_flow)
        warped = time_to_channels(warped, T)  # [B, dim*T, H, W]
        fw = self.conv_Fw(warped if fw is None else torch.cat([fw, warped], dim=1))  # [B, dim, H, W]
        kd_w = None
        if kd is not None:
            kd_w = time_to_channels(self.rdb_KD(kd), T)  # [B, dim*T, H, W]
            kd_w = self.conv_KD(kd_w)  # [B, dim, H, W]
        for blk in self.multi_attn_block:
            fw = blk(fw, centre, kd_w)
        return feat, fw, f


def frma_stack(*, is_da: bool, first_f: bool, num_frma: int, **block: Any) -> nn.ModuleList:
    """``num_frma`` FRMA blocks; only the first one builds the first-iteration heads (official flags)."""
    return nn.ModuleList(
        [
            FRMA(is_da=is_da, is_first_f=first_f and i == 0, is_first_fw=i == 0, **block)
            for i in range(num_frma)
        ]
    )
