"""FMA-Net (Youk, Oh and Kim, CVPR 2024): joint video super-resolution and deblurring.

Our own implementation, numerically compatible with the official code (KAIST-VICLab/FMA-Net) so that the
official weights load without renaming: the module tree and parameter shapes are the official ones
(``degradation_learning_network.*`` = Net_D, ``restoration_network.*`` = Net_R). A window of ``num_seq``
LR frames gives one HR centre frame.

- Net_D (degradation learning) predicts, per LR pixel, ``num_flow`` flow-mask pairs between the centre and
  every frame, and a ``T x k_d x k_d`` degradation kernel; with an HR window ``y`` those re-degrade the warped
  ``y`` into the LR centre frame (``recon``, a training signal).
- Net_R (restoration) refines the flows, predicts ``T x k_u x k_u`` upsampling kernels per HR sub-pixel and
  restores the centre frame as the dynamic upsampling of the flow-warped LR window plus a pixel-shuffle
  residual.

Internally frames are folded into the batch (``[B*T, C, H, W]``) wherever the official code runs per-frame
``1 x k x k`` ``Conv3d``s: the result is the same (within float rounding) and 2-D convolutions are faster on
CPU. Folding time into channels keeps the official channel order ``c*T + t``. Other reorganisations for
speed and memory, each equal to the official computation up to float rounding and tested against it:
channels-last convolutions, Net_R's 3x3x3 convs as per-frame 2-D convs, the composition of Net_D's last
kernel conv with Net_R's first one in the inference path, and banded evaluation of the HR residual branch
and of the dynamic filters (``docs/benchmarks.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models.dynamic_filter import dynamic_downsample, dynamic_upsample
from fmanetpp_cli.models.frma import conv_pair, frma_stack
from fmanetpp_cli.models.fused import ComposedKernelCache, redo_border
from fmanetpp_cli.models.layers import (
    LAYERNORM_TYPES,
    RRDB,
    FrameConv3d,
    PixelShuffleBlock,
    compose_kernels,
    repeat_frames,
    temporal_conv,
    to_channels_last,
)
from fmanetpp_cli.models.warp import flow_mask_warp

# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

# our (PEP 8) field name -> the official config name, where they differ
_OFFICIAL_NAMES = {"num_rdb": "num_RDB", "num_frma": "num_FRMA", "layernorm_type": "LayerNorm_type"}


@dataclass(frozen=True, slots=True)
class FMANetConfig:
    """Architecture of an FMA-Net; the defaults are the official full model (``experiment.cfg``)."""

    in_channels: int = 3  # image channels
    dim: int = 90  # feature channels; divisible by num_flow, num_seq and num_heads
    ds_kernel_size: int = 20  # degradation (downsampling) kernel size k_d; k_d - scale even
    us_kernel_size: int = 5  # restoration (upsampling) kernel size k_u; odd
    num_rdb: int = 12  # RDBs in each feature extractor's RRDB
    growth_rate: int = 18  # RDB growth rate
    num_dense_layer: int = 4  # dense layers per RDB
    num_flow: int = 9  # flow-mask pairs per frame (multi-flow warping)
    num_frma: int = 4  # FRMA blocks in Net_D and in Net_R
    num_transformer_block: int = 2  # attention blocks per FRMA
    num_heads: int = 6  # attention heads
    layernorm_type: str = "WithBias"  # "WithBias" or "BiasFree"
    ffn_expansion_factor: float = 2.66  # feed-forward hidden width = int(dim * factor)
    bias: bool = False  # conv biases (RDB fusion convs always have one)
    scale: int = 4  # upscaling factor; the pixel-shuffle branch is hard-wired to 4
    num_seq: int = 3  # frames per window T (odd; the centre frame is restored)
    stage: int = 2  # 1: Net_D only (training stage 1), 2: Net_D + Net_R

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "layernorm_type":
                if value not in LAYERNORM_TYPES:
                    raise ConfigError(f"layernorm_type must be one of {LAYERNORM_TYPES}, got {value!r}")
            elif field.name == "bias":
                if not isinstance(value, bool):
                    raise ConfigError(f"bias must be true or false, got {value!r}")
            elif field.name == "ffn_expansion_factor":
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ConfigError(f"ffn_expansion_factor must be a positive number, got {value!r}")
                object.__setattr__(self, field.name, float(value))
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field.name} must be a positive integer, got {value!r}")
        for name in ("num_flow", "num_seq", "num_heads"):
            if self.dim % getattr(self, name):
                raise ConfigError(f"dim ({self.dim}) must be divisible by {name} ({getattr(self, name)})")
        if self.num_seq % 2 == 0:
            raise ConfigError(f"num_seq must be odd (a centre frame is restored), got {self.num_seq}")
        if self.scale != 4:
            raise ConfigError(
                f"FMA-Net's pixel-shuffle branch is fixed at x4; scale must be 4, got {self.scale}"
            )
        if self.ds_kernel_size < self.scale or (self.ds_kernel_size - self.scale) % 2:
            raise ConfigError(
                f"ds_kernel_size - scale must be even and >= 0, got ds_kernel_size {self.ds_kernel_size}, "
                f"scale {self.scale}"
            )
        if self.us_kernel_size % 2 == 0:
            raise ConfigError(f"us_kernel_size must be odd, got {self.us_kernel_size}")
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if int(self.dim * self.ffn_expansion_factor) < 1:
            raise ConfigError("dim * ffn_expansion_factor must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, our field names."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FMANetConfig:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise ``ConfigError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown FMANetConfig keys: {', '.join(unknown)}")
        return cls(**d)

    def to_official(self) -> dict[str, Any]:
        """The official config fields (``num_RDB``, ``LayerNorm_type``, ...) with their values."""
        return {_OFFICIAL_NAMES.get(k, k): v for k, v in self.to_dict().items()}

    @classmethod
    def from_official(cls, cfg: dict[str, Any]) -> FMANetConfig:
        """Build from the official field names (as in the fixtures' ``config.json``); unknown keys raise."""
        ours = {v: k for k, v in _OFFICIAL_NAMES.items()}
        unknown = sorted(
            k for k in cfg if k in _OFFICIAL_NAMES or (k not in ours and k not in _field_names())
        )
        if unknown:
            raise ConfigError(f"unknown official FMA-Net config keys: {', '.join(unknown)}")
        return cls(**{ours.get(k, k): v for k, v in cfg.items()})


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(FMANetConfig)}


# --------------------------------------------------------------------------------------------------
# Helpers (the FRMA blocks are in models/frma.py)
# --------------------------------------------------------------------------------------------------


# The residual branch of Net_R runs in bands of LR rows of about this many bytes of temporaries, with a
# halo of rows equal to its receptive field.
_RES_BAND_BYTES = 192 * 2**20
_RES_HALO = 3


def _temporal_conv(conv: nn.Conv3d, frames: Tensor, T: int) -> Tensor:
    """Apply a full ``kt x k x k`` ``Conv3d`` (zero padding in time) to frames folded into the batch.

    Output frame ``t`` sums the 2-D convolutions of input frames ``t + d - pad`` with the kernel's temporal
    slices ``d``. This equals ``conv(x)`` on ``[B, C, T, H, W]`` without moving the (large) input to that
    layout, and avoids the slow CPU ``conv3d`` kernel that PyTorch picks for some of these shapes.

    Shapes:
        frames: ``[B*T, C_in, H, W]``.
        return: ``[B*T, C_out, H, W]``.
    """
    return temporal_conv(frames, conv.weight, conv.bias, tuple(conv.padding), T)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


class NetD(nn.Module):
    """FMA-Net's degradation learning network (official ``Net_D``).

    Args: the :class:`FMANetConfig` fields of the same names (``us_kernel_size``, ``scale`` and ``stage``
    are not used here).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        dim: int,
        ds_kernel_size: int,
        num_rdb: int,
        growth_rate: int,
        num_dense_layer: int,
        num_flow: int,
        num_frma: int,
        num_transformer_block: int,
        num_heads: int,
        layernorm_type: str,
        ffn_expansion_factor: float,
        bias: bool,
        num_seq: int,
    ) -> None:
        super().__init__()
        self.num_seq = num_seq
        self.feature_extractor = nn.Sequential(
            FrameConv3d(in_channels=in_channels, out_channels=dim, kernel_size=3, bias=bias),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            RRDB(
                dim=dim, num_rdb=num_rdb, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias
            ),
        )
        self.FRMA_blocks = frma_stack(
            is_da=False,
            first_f=True,
            num_frma=num_frma,
            dim=dim,
            num_seq=num_seq,
            growth_rate=growth_rate,
            num_dense_layer=num_dense_layer,
            num_flow=num_flow,
            num_transformer_block=num_transformer_block,
            num_heads=num_heads,
            layernorm_type=layernorm_type,
            ffn_expansion_factor=ffn_expansion_factor,
            bias=bias,
        )
        self.f_conv = conv_pair(3 * num_flow, 3 * num_flow, 3, bias=bias)
        self.d_conv = conv_pair(dim // num_seq, dim, ds_kernel_size * ds_kernel_size, bias=bias)
        self.a_conv = conv_pair(dim, dim, in_channels, bias=bias)

    def forward(self, frames: Tensor, *, with_y_heads: bool = True) -> tuple[Tensor, ...]:
        """Features, degradation kernels and flows of one window.

        Args:
            frames: the LR window, frames folded into the batch.
            with_y_heads: also compute the image flow-mask ``f_y`` and the anchor (only the training
                branch with an HR window uses them); otherwise those two are returned as empty tensors.

        Returns:
            ``(feat, kd, f_y, f, anchor)``: features, degradation-kernel logits, image flow-mask,
            multi-flow-masks, anchor image.

        Shapes:
            frames: ``[B*T, 3, H, W]``.
            return: ``[B*T, dim, H, W]``, ``[B*T, k_d*k_d, H, W]``, ``[B*T, 3, H, W]``,
            ``[B*T, 3*num_flow, H, W]``, ``[B*T, 3, H, W]``.
        """
        feat, fw, f = self.trunk(frames)
        kd = self.d_conv[2](self.kernel_hidden(fw))  # [B*T, k_d^2, H, W]
        if not with_y_heads:
            empty = frames.new_empty(0)
            return feat, kd, empty, f, empty
        return feat, kd, self.f_conv(f), f, self.a_conv(feat)

    def trunk(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Feature extraction and the FRMA blocks.

        Returns:
            ``(feat, fw, f)``: per-frame features, the fused warped features, the multi-flow-masks.

        Shapes:
            frames: ``[B*T, 3, H, W]``.
            return: ``[B*T, dim, H, W]``, ``[B, dim, H, W]``, ``[B*T, 3*num_flow, H, W]``.
        """
        T = self.num_seq
        feat = self.feature_extractor(frames)  # [B*T, dim, H, W]
        centre = to_channels_last(feat.unflatten(0, (-1, T))[:, T // 2])  # [B, dim, H, W]
        fw: Tensor | None = None
        f: Tensor | None = None
        for blk in self.FRMA_blocks:
            feat, fw, f = blk(feat, fw, f, centre)
        assert fw is not None and f is not None  # num_frma >= 1
        return feat, fw, f

    def kernel_hidden(self, fw: Tensor) -> Tensor:
        """The hidden layer of the degradation-kernel head (``d_conv`` up to its last conv).

        Shapes:
            fw: ``[B, dim, H, W]`` (channels ``c*T + t``).
            return: ``[B*T, dim, H, W]``.
        """
        fw = to_channels_last(
            rearrange(fw, "b (c t) h w -> (b t) c h w", t=self.num_seq)
        )  # [B*T, dim/T, H, W]
        return self.d_conv[1](self.d_conv[0](fw))


class NetR(nn.Module):
    """FMA-Net's restoration network (official ``Net_R``).

    Args: the :class:`FMANetConfig` fields of the same names (``stage`` is not used here).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        dim: int,
        ds_kernel_size: int,
        us_kernel_size: int,
        num_rdb: int,
        growth_rate: int,
        num_dense_layer: int,
        num_flow: int,
        num_frma: int,
        num_transformer_block: int,
        num_heads: int,
        layernorm_type: str,
        ffn_expansion_factor: float,
        bias: bool,
        scale: int,
        num_seq: int,
    ) -> None:
        super().__init__()
        self.num_seq = num_seq
        self.scale = scale
        self.us_kernel_size = us_kernel_size
        self.feature_extractor = nn.Sequential(
            FrameConv3d(in_channels=in_channels + dim, out_channels=dim, kernel_size=3, bias=bias),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            RRDB(
                dim=dim, num_rdb=num_rdb, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias
            ),
        )
        self.FRMA_blocks = frma_stack(
            is_da=True,
            first_f=False,
            num_frma=num_frma,
            dim=dim,
            num_seq=num_seq,
            growth_rate=growth_rate,
            num_dense_layer=num_dense_layer,
            num_flow=num_flow,
            num_transformer_block=num_transformer_block,
            num_heads=num_heads,
            layernorm_type=layernorm_type,
            ffn_expansion_factor=ffn_expansion_factor,
            bias=bias,
        )
        self.f_conv1 = conv_pair(3 * num_flow, 3 * num_flow, 3 * num_flow, bias=bias)
        # the one convolution that mixes neighbouring frames: full 3x3x3, zero padding in time
        self.d_conv = nn.Sequential(
            nn.Conv3d(ds_kernel_size * ds_kernel_size, dim, kernel_size=3, padding=1, bias=bias),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv3d(dim, dim, kernel_size=3, padding=1, bias=bias),
        )
        self.res_conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=bias)
        self.res_conv2 = nn.Conv2d(dim, in_channels, kernel_size=3, padding=1, bias=bias)
        self.upsample = PixelShuffleBlock(channels=dim, bias=bias)
        self.r_conv = conv_pair(
            dim // num_seq, dim, us_kernel_size * us_kernel_size * scale * scale, bias=bias
        )
        self.f_conv2 = conv_pair(3 * num_flow, 3 * num_flow, 3, bias=bias)
        self.f_conv3 = conv_pair(3 * num_flow + 3 + 3, 3 * num_flow, 3, bias=bias)
        self.a_conv = conv_pair(dim, dim, in_channels, bias=bias)

    def forward(self, frames: Tensor, feat: Tensor, f: Tensor, kd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Restore the centre frame.

        Args:
            frames: the LR window.
            feat: Net_D features.
            f: Net_D multi-flow-masks.
            kd: Net_D degradation-kernel logits.

        Returns:
            ``(output, lr_warp, anchor)``: the HR centre frame, the LR window warped to the centre (times
            its mask), the anchor image.

        Shapes:
            frames: ``[B*T, 3, H, W]``; feat: ``[B*T, dim, H, W]``; f: ``[B*T, 3*num_flow, H, W]``;
            kd: ``[B*T, k_d*k_d, H, W]``.
            return: ``[B, 3, sH, sW]``, ``[B*T, 3, H, W]``, ``[B*T, 3, H, W]``.
        """
        return self.restore(frames, feat, f, self.encode_kernels(kd))

    def encode_kernels(self, kd: Tensor, *, first_conv_done: bool = False) -> Tensor:
        """Features of Net_D's degradation kernels (``d_conv``, the 3x3x3 convs that mix frames).

        Split from :meth:`restore` so that a caller can drop the large kernel tensor before restoring.
        With ``first_conv_done``, ``kd`` is already the output of ``d_conv[0]`` (``[B*T, dim, H, W]``).

        Shapes:
            kd: ``[B*T, k_d*k_d, H, W]``.
            return: ``[B*T, dim, H, W]``.
        """
        first: nn.Conv3d = self.d_conv[0]  # type: ignore[assignment]
        second: nn.Conv3d = self.d_conv[2]  # type: ignore[assignment]
        if not first_conv_done:
            kd = _temporal_conv(first, kd, self.num_seq)  # [B*T, dim, H, W]
        return _temporal_conv(second, F.leaky_relu(kd, 0.2), self.num_seq)

    def restore(
        self, frames: Tensor, feat: Tensor, f: Tensor, kd_feat: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` after :meth:`encode_kernels` (``kd_feat`` is its result)."""
        T, s, k = self.num_seq, self.scale, self.us_kernel_size
        feat = self.feature_extractor(torch.cat([frames, feat], dim=1))  # [B*T, dim, H, W]
        centre = to_channels_last(feat.unflatten(0, (-1, T))[:, T // 2])  # [B, dim, H, W]
        f = self.f_conv1(f)
        fw: Tensor | None = None
        for blk in self.FRMA_blocks:
            feat, fw, f = blk(feat, fw, f, centre, kd_feat)
        assert fw is not None  # num_frma >= 1
        del kd_feat

        res = self.residual(fw)  # [B, 3, sH, sW]
        kr = self.r_conv(
            to_channels_last(rearrange(fw, "b (c t) h w -> (b t) c h w", t=T))
        )  # [B*T, s*s*k*k, H, W]

        centre_x = repeat_frames(frames.unflatten(0, (-1, T))[:, T // 2], T)  # [B*T, 3, H, W]
        warped = to_channels_last(flow_mask_warp(frames, self.f_conv2(f))[0])
        f_x = self.f_conv3(torch.cat([f, warped, centre_x], dim=1))  # [B*T, 3, H, W]
        warped, _ = flow_mask_warp(frames, f_x)
        res += dynamic_upsample(
            rearrange(warped, "(b t) c h w -> b c t h w", t=T),
            rearrange(kr, "(b t) c h w -> b c t h w", t=T),
            kernel_size=k,
            scale=s,
        )  # [B, 3, sH, sW]
        return res, warped, self.a_conv(feat)

    def residual(self, fw: Tensor) -> Tensor:
        """The pixel-shuffle residual branch, computed in bands of LR rows to bound its HR temporaries.

        Each band is extended by ``_RES_HALO`` LR rows on both sides (the branch's receptive field: two
        ``3x3`` convs at LR, one at x2, two at x4 = 1 + 1 + 1/2 + 1/4 + 1/4 LR rows) and cropped after, so
        the bands together equal the branch applied to the whole frame.

        Shapes:
            fw: ``[B, dim, H, W]``.
            return: ``[B, 3, sH, sW]``.
        """
        B, C, H, W = fw.shape
        s = self.scale
        # an LR row costs about two HR feature maps of s*s*C*W floats at the widest point of the branch
        rows = max(1, _RES_BAND_BYTES // (2 * fw.element_size() * B * C * s * s * W))
        out = fw.new_empty(B, 3, s * H, s * W)
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            a, b = max(0, r0 - _RES_HALO), min(H, r1 + _RES_HALO)
            res = F.leaky_relu(self.res_conv1(fw[:, :, a:b]), 0.2)
            res = self.res_conv2(self.upsample(res))  # [B, 3, s*(b-a), sW]
            out[:, :, s * r0 : s * r1] = res[:, :, s * (r0 - a) : s * (r1 - a)]
        return out


class FMANet(nn.Module):
    """FMA-Net: a window of ``num_seq`` blurry LR frames -> the sharp HR centre frame.

    Inputs and outputs are float in ``[0, 1]`` (outputs are not clamped), channel order as trained
    (the official weights expect BGR; see ``channel_order``).

    Args:
        config: the architecture.
    """

    temporal_mode: ClassVar[str] = "window"
    channel_order: str = "RGB"

    def __init__(self, config: FMANetConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.num_seq = config.num_seq
        self.temporal_radius = config.num_seq // 2
        self.stage = config.stage
        common: dict[str, Any] = {
            "in_channels": config.in_channels,
            "dim": config.dim,
            "ds_kernel_size": config.ds_kernel_size,
            "num_rdb": config.num_rdb,
            "growth_rate": config.growth_rate,
            "num_dense_layer": config.num_dense_layer,
            "num_flow": config.num_flow,
            "num_frma": config.num_frma,
            "num_transformer_block": config.num_transformer_block,
            "num_heads": config.num_heads,
            "layernorm_type": config.layernorm_type,
            "ffn_expansion_factor": config.ffn_expansion_factor,
            "bias": config.bias,
            "num_seq": config.num_seq,
        }
        # the composed kernel of _fused_kernel_features, kept until the weights change
        self._fused_cache: ComposedKernelCache[Tensor] = ComposedKernelCache()
        self.degradation_learning_network = NetD(**common)
        if config.stage == 2:
            self.restoration_network = NetR(
                **common, us_kernel_size=config.us_kernel_size, scale=config.scale
            )

    @classmethod
    def from_official_config(cls, cfg: dict[str, Any]) -> FMANet:
        """Build from a config dict with the official field names (``num_RDB``, ``LayerNorm_type``, ...)."""
        return cls(FMANetConfig.from_official(cfg))

    def _check_inputs(self, x: Tensor, y: Tensor | None) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels or x.shape[2] != c.num_seq:
            raise InputShapeError(
                f"FMA-Net expects x of shape [B, {c.in_channels}, {c.num_seq}, H, W], got {tuple(x.shape)}"
            )
        if x.shape[3] < 2 or x.shape[4] < 2:
            raise InputShapeError(
                f"FMA-Net needs frames at least 2x2 pixels, got x of shape {tuple(x.shape)}"
            )
        if y is not None:
            B, C, T, H, W = x.shape
            want = (B, C, T, H * c.scale, W * c.scale)
            if tuple(y.shape) != want:
                raise InputShapeError(f"FMA-Net expects y of shape {list(want)}, got {tuple(y.shape)}")
        elif c.stage == 1:
            raise InputShapeError("a stage-1 FMA-Net (Net_D only) needs the HR window y")

    def _can_fuse_kernels(self, x: Tensor) -> bool:
        # inference only: the composed kernel is cached and not differentiated through
        return (
            self.stage == 2
            and not torch.is_grad_enabled()
            and self.degradation_learning_network.d_conv[2].bias is None
            and x.shape[3] >= 4
            and x.shape[4] >= 4
        )

    def _fused_kernel_features(self, hidden: Tensor) -> Tensor:
        """Net_R's degradation features straight from Net_D's kernel-head hidden layer.

        Net_D's last kernel conv (per-frame ``3x3``, ``dim -> k_d^2``) is followed, in the test path, only
        by Net_R's first ``d_conv`` (``3x3x3``, ``k_d^2 -> dim``). Both are linear, so away from the image
        border they are one ``3x5x5`` conv ``dim -> dim``: half the arithmetic, and the ``k_d^2``-channel
        kernel tensor is never built. On the one-pixel border ring the second conv's zero padding differs
        from the composed conv, so those pixels are recomputed the two-step way from thin strips.
        (Used without autograd, with a bias-free Net_D kernel conv and frames of at least 4x4; see
        ``_can_fuse_kernels``. The composed kernel is cached until the weights change.)

        Shapes:
            hidden: ``[B*T, dim, H, W]``.
            return: ``[B*T, dim, H, W]``.
        """
        T = self.num_seq
        inner: FrameConv3d = self.degradation_learning_network.d_conv[2]  # type: ignore[assignment]
        net_r = self.restoration_network
        outer: nn.Conv3d = net_r.d_conv[0]  # type: ignore[assignment]
        fused = self._fused_cache.get(
            (outer.weight, inner.weight), lambda: compose_kernels(outer.weight, inner.weight[:, :, 0])
        )  # [dim, dim, kt, 5, 5]
        pad = (int(outer.padding[0]), 2, 2)
        out = temporal_conv(hidden, fused, outer.bias, pad, T)  # [B*T, dim, H, W]

        def two_step(h: Tensor) -> Tensor:
            return _temporal_conv(outer, inner(to_channels_last(h)), T)

        redo_border(out, hidden, two_step, ring=1, slab=3)
        return net_r.encode_kernels(out, first_conv_done=True)

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Restore the centre frame of a window (and, with ``y``, run the degradation branch).

        Args:
            x: the blurry LR window.
            y: the sharp HR window (training / validation only).

        Returns:
            ``output`` (HR centre frame), ``lr_warp`` (LR window warped to the centre, masked) and
            ``F_sharp_R`` (Net_R anchor); with ``y`` also ``recon`` (re-degraded LR centre frame),
            ``hr_warp`` (``y`` warped to the centre, masked), ``image_flow`` (Net_D image flow, LR pixels)
            and ``F_sharp_D`` (Net_D anchor). A stage-1 network returns only the ``y`` keys.

        Raises:
            InputShapeError: ``x`` or ``y`` has the wrong shape.

        Shapes:
            x: ``[B, 3, T, H, W]``; y: ``[B, 3, T, sH, sW]``.
            output: ``[B, 3, sH, sW]``; lr_warp, F_sharp_R, F_sharp_D: ``[B, 3, T, H, W]``;
            recon: ``[B, 3, H, W]``; hr_warp: ``[B, 3, T, sH, sW]``; image_flow: ``[B, 2, T, H, W]``.
        """
        self._check_inputs(x, y)
        T, s = self.num_seq, self.scale

        def unfold(t: Tensor) -> Tensor:
            return rearrange(t, "(b t) c h w -> b c t h w", t=T)

        frames = to_channels_last(rearrange(x, "b c t h w -> (b t) c h w"))  # [B*T, 3, H, W]
        if y is None and self._can_fuse_kernels(x):
            # test path: Net_D's kernels feed only Net_R's first conv, so the two convs run as one
            net_d = self.degradation_learning_network
            feat, fw, f = net_d.trunk(frames)
            kd_feat = self._fused_kernel_features(net_d.kernel_hidden(fw))
            del fw
            output, lr_warp, anchor_r = self.restoration_network.restore(frames, feat, f, kd_feat)
            return {"output": output, "lr_warp": unfold(lr_warp), "F_sharp_R": unfold(anchor_r)}

        feat, kd, f_y, f, anchor_d = self.degradation_learning_network(frames, with_y_heads=y is not None)
        result: dict[str, Tensor] = {}
        if y is not None:
            y_frames = rearrange(y, "b c t h w -> (b t) c h w")  # [B*T, 3, sH, sW]
            hr_warp, coverage = flow_mask_warp(y_frames, f_y, scale=s, with_coverage=True)
            assert coverage is not None
            result["recon"] = dynamic_downsample(
                unfold(hr_warp),
                unfold(kd),
                kernel_size=self.config.ds_kernel_size,
                scale=s,
                coverage=unfold(coverage),
            )  # [B, 3, H, W]
            result["hr_warp"] = unfold(hr_warp)
            result["image_flow"] = unfold(f_y[:, :2])
            result["F_sharp_D"] = unfold(anchor_d)
        if self.stage == 1:
            return result
        # Net_R.forward in two steps, so that the degradation kernels (the largest tensor) are freed first
        kd_feat = self.restoration_network.encode_kernels(kd)
        del kd
        output, lr_warp, anchor_r = self.restoration_network.restore(frames, feat, f, kd_feat)
        result["output"] = output
        result["lr_warp"] = unfold(lr_warp)
        result["F_sharp_R"] = unfold(anchor_r)
        return result


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

PRESETS: dict[str, FMANetConfig] = {
    # the official full model (experiment.cfg; 9,766,503 parameters), what the released weights fit
    "fmanet": FMANetConfig(),
    # the small configuration of the golden fixtures (../shared/reference/fmanet-v1/small-a-*)
    "fmanet-small-a": FMANetConfig(
        dim=18,
        ds_kernel_size=6,
        us_kernel_size=3,
        num_rdb=2,
        growth_rate=6,
        num_dense_layer=2,
        num_flow=3,
        num_frma=2,
        num_transformer_block=1,
        num_heads=2,
    ),
}
