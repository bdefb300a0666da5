"""FMA-Net++: sequence-level joint video super-resolution and deblurring under changing exposure.

Reference: "FMA-Net++: Motion- and Exposure-Aware Real-World Joint Video Super-Resolution and Deblurring",
arXiv 2512.04390 (no official code; this follows our specification ``../shared/docs/fmanetpp-paper.md``).
Every choice the paper leaves open is a field of :class:`FMANetPPConfig` (documented there and in
``docs/fmanetpp-design.md``).

Structure (all frames of a sequence are processed at once, time folded into the batch):

- ``ete``: frozen per-frame exposure encoder (:mod:`fmanetpp_cli.models.ete`), ``X_i -> u_i``.
- ``degradation_learning_network`` (Net_D): per-frame features (conv + RRDB), ``M`` HRBP blocks
  (:mod:`fmanetpp_cli.models.hrbp`) starting from zero flows and open masks, then two heads: the image
  flow-masks ``f^Y`` (towards ``i - 1`` and ``i + 1``) and the degradation kernels ``K^D``
  (``3 x k_d x k_d`` taps per LR pixel over the HR frames ``i - 1, i, i + 1``).
- Exposure-aware FGDF (training only): the sharp HR frames ``Y_{i +- 1}`` are warped to frame ``i`` with
  the upsampled ``f^Y`` and, with ``Y_i``, filtered by ``K^D`` with stride 4 into a re-blurred LR frame.
- ``restoration_network`` (Net_R): features of ``[X_i, F_i^{D,M}]`` (conv + RRDB), ``M`` HRBP blocks with
  the degradation-aware attention (query from the kernel features), flows initialised with Net_D's, and
  ``Y_i = Up(F_i^{R,M}) + bilinear_x4(X_i)``.

Temporal receptive field: each HRBP block mixes a frame with ``i +- 1``. Net_D's outputs for frame ``i``
depend on frames ``i - M .. i + M``; Net_R starts from them and adds ``M`` more blocks, so an output frame
depends on ``i - 2M .. i + 2M`` (``temporal_radius = 2 * num_blocks``; 8 for the paper's ``M = 4``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models.ete import ExposureEncoder
from fmanetpp_cli.models.fused import ComposedKernelCache, redo_border
from fmanetpp_cli.models.global_motion import neighbour_shifts
from fmanetpp_cli.models.hrbp import EDGE_MODES, HRBPBlock
from fmanetpp_cli.models.layers import INFERENCE_CHUNK as INFERENCE_CHUNK  # re-exported (tests, callers)
from fmanetpp_cli.models.layers import (
    LAYERNORM_TYPES,
    RRDB,
    PixelShuffleBlock,
    compose_kernels,
    per_frame,
)
from fmanetpp_cli.models.reblur import exposure_aware_fgdf

MIN_SIZE = 2
"""Smallest LR height / width the network accepts (the backward warp needs two pixels)."""

UPSAMPLERS = ("pixelshuffle", "light")

BASE_UPSAMPLERS = ("bilinear", "bicubic")
"""The fixed x4 interpolation of ``X_i`` that the learned residual is added to (Eq. 8 says bilinear)."""


@dataclass(frozen=True, slots=True)
class FMANetPPConfig:
    """Architecture of FMA-Net++. Defaults are the paper-size network (preset ``fmanetpp-paper``).

    Fields the paper gives: ``num_blocks`` (M = 4), ``num_flow`` (n = 9), ``ds_kernel_size`` (k_d = 20),
    ``scale`` (4), ``num_seq`` (10-frame training clips). Everything else is our choice (see
    ``docs/fmanetpp-design.md``); FMA-Net (v1) values where the two networks share a part.
    """

    in_channels: int = 3  # RGB input
    dim: int = 90  # feature channels C (v1's value; divisible by n = 1, 5, 9 and by the heads)
    num_blocks: int = 4  # M: HRBP blocks in Net_D and again in Net_R
    num_flow: int = 9  # n: flow-mask pairs per direction (i - 1 and i + 1)
    ds_kernel_size: int = 20  # k_d: degradation kernel size over HR pixels (k_d - scale must be even)
    scale: int = 4  # upscaling factor (the upsampler is built for x4 only)
    num_seq: int = 10  # frames per training clip (inference takes any T >= 1)
    num_rdb: int = 12  # RDBs in the RRDB of each feature extractor (v1)
    growth_rate: int = 18  # RDB growth rate (v1)
    num_dense_layer: int = 4  # dense layers per RDB (v1)
    num_transformer_block: int = 2  # multi-attention layers per HRBP block (v1: 2 per FRMA block)
    num_heads: int = 6  # MDTA heads (v1)
    ffn_expansion_factor: float = 2.66  # GDFN expansion (v1)
    layernorm_type: str = "WithBias"  # "WithBias" or "BiasFree" (v1: WithBias)
    bias: bool = False  # bias in convs / projections (v1: off; RDB fusion convs always have one)
    block_rdb: bool = True  # an RDB on F_i at the start of each HRBP block (v1 FRMA step 1)
    fuse_kernel_size: int = 1  # kernel of the fusion conv [F_i, F_{i-1->i}, F_{i+1->i}] -> C (v1 conv_Fw: 1)
    kernel_query_size: int = 3  # kernel of each Net_R block's conv making its DA query from kernel features
    kernel_conv_size: int = 3  # kernel of the convs on the 3 k_d^2-channel side of d_conv / kernel_encoder
    upsampler: str = "pixelshuffle"  # Up(F): "pixelshuffle" (v1's x2, x2 branch) or "light" (x4 shuffle)
    base_upsampler: str = "bilinear"  # Eq. 8's fixed x4 of X_i: "bilinear" (paper) or "bicubic" (CPU presets)
    use_exposure: bool = True  # False = the paper's "w/o ETE" ablation: no ETE, no ETM
    ete_width: int = 64  # first-stage width of the ResNet-18-shaped ETE (64 = ResNet-18; d_u = 8x)
    ete_normalize: bool = True  # L2-normalise the exposure embedding
    etm_hidden: int = 512  # hidden width of each ETM MLP (0 = one linear layer)
    edge_mode: str = "replicate"  # missing neighbour at a sequence end: "replicate" (own frame) or "mask" (0)
    init_mask_logit: float = 4.0  # occlusion-mask logit of Net_D's initial flow-masks (sigmoid = 0.982)
    initial_flow: str = "zero"  # Net_D's starting flows: "zero" (paper) or "global" (phase correlation)

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"FMANetPPConfig: {msg}")

        for name in ("in_channels", "dim", "num_blocks", "num_flow", "num_seq", "num_rdb", "growth_rate"):
            need(
                isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                f"{name} must be an int >= 1",
            )
        need(self.in_channels == 3, f"in_channels must be 3 (RGB), got {self.in_channels}")
        need(
            self.num_dense_layer >= 1 and self.num_transformer_block >= 1,
            "need >= 1 dense / attention layers",
        )
        need(self.dim % self.num_flow == 0, f"dim {self.dim} must be divisible by num_flow {self.num_flow}")
        need(self.num_heads >= 1 and self.dim % self.num_heads == 0, f"dim {self.dim} not divisible by heads")
        need(self.scale == 4, f"scale must be 4 (the upsampler is two x2 pixel shuffles), got {self.scale}")
        need(
            self.ds_kernel_size >= self.scale and (self.ds_kernel_size - self.scale) % 2 == 0,
            f"ds_kernel_size - scale must be even and >= 0, got k_d={self.ds_kernel_size}, s={self.scale}",
        )
        need(self.ffn_expansion_factor > 0, "ffn_expansion_factor must be > 0")
        need(
            self.initial_flow in ("zero", "global"),
            f"initial_flow must be zero or global, not {self.initial_flow!r}",
        )
        need(self.layernorm_type in LAYERNORM_TYPES, f"layernorm_type must be one of {LAYERNORM_TYPES}")
        need(self.edge_mode in EDGE_MODES, f"edge_mode must be one of {EDGE_MODES}, got {self.edge_mode!r}")
        need(self.upsampler in UPSAMPLERS, f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}")
        need(
            self.base_upsampler in BASE_UPSAMPLERS,
            f"base_upsampler must be one of {BASE_UPSAMPLERS}, got {self.base_upsampler!r}",
        )
        for name in ("fuse_kernel_size", "kernel_query_size", "kernel_conv_size"):
            need(getattr(self, name) % 2 == 1, f"{name} must be odd")
        need(self.ete_width >= 8 and self.ete_width % 8 == 0, "ete_width must be a positive multiple of 8")
        need(self.etm_hidden >= 0, "etm_hidden must be >= 0")

    @property
    def exposure_dim(self) -> int:
        """Size ``d_u`` of the exposure embedding (0 without exposure conditioning)."""
        return 8 * self.ete_width if self.use_exposure else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FMANetPPConfig:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown FMANetPPConfig keys: {', '.join(unknown)}")
        return cls(**d)


def _conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


def _feature_extractor(in_channels: int, cfg: FMANetPPConfig) -> nn.Sequential:
    """Conv3x3 ``in_channels -> C``, LeakyReLU, RRDB: the per-frame feature extractor of Net_D and Net_R."""
    return nn.Sequential(
        _conv(in_channels, cfg.dim, bias=cfg.bias),
        nn.LeakyReLU(0.2, inplace=True),
        RRDB(
            dim=cfg.dim,
            num_rdb=cfg.num_rdb,
            growth_rate=cfg.growth_rate,
            num_dense_layer=cfg.num_dense_layer,
            bias=cfg.bias,
        ),
    )


def _hrbp_blocks(cfg: FMANetPPConfig, *, degradation_aware: bool) -> nn.ModuleList:
    return nn.ModuleList(
        [
            HRBPBlock(
                dim=cfg.dim,
                num_flow=cfg.num_flow,
                growth_rate=cfg.growth_rate,
                num_dense_layer=cfg.num_dense_layer,
                num_transformer_block=cfg.num_transformer_block,
                num_heads=cfg.num_heads,
                ffn_expansion_factor=cfg.ffn_expansion_factor,
                layernorm_type=cfg.layernorm_type,
                bias=cfg.bias,
                use_rdb=cfg.block_rdb,
                fuse_kernel_size=cfg.fuse_kernel_size,
                degradation_aware=degradation_aware,
                kernel_query_size=cfg.kernel_query_size,
                exposure_dim=cfg.exposure_dim,
                etm_hidden=cfg.etm_hidden,
                edge_mode=cfg.edge_mode,
                update_flow=not (degradation_aware and j == cfg.num_blocks - 1),
            )
            for j in range(cfg.num_blocks)
        ]
    )


class DegradationNet(nn.Module):
    """Net_D: features, ``M`` HRBP blocks, the image flow-mask head and the degradation-kernel head.

    Heads (not specified by the paper; FMA-Net v1's recipes): ``f_conv`` = conv3x3 ``6n -> 6n``, LeakyReLU,
    conv3x3 ``6n -> 6``; ``d_conv`` = conv3x3 ``C -> C``, LeakyReLU, conv3x3 ``C -> 3 k_d^2``. The kernel
    channels are ordered ``(source frame, row, col)`` with sources ``(i - 1, i, i + 1)``; they are logits,
    normalised by a softmax over all ``3 k_d^2`` taps inside the FGDF.

    Args:
        config: the architecture.
    """

    def __init__(self, config: FMANetPPConfig) -> None:
        super().__init__()
        c = config
        self.num_flow = c.num_flow
        self.init_mask_logit = c.init_mask_logit
        self.initial_flow = c.initial_flow
        self.feature_extractor = _feature_extractor(c.in_channels, c)
        self.hrbp_blocks = _hrbp_blocks(c, degradation_aware=False)
        n6 = 6 * c.num_flow
        self.f_conv = nn.Sequential(
            _conv(n6, n6, bias=c.bias), nn.LeakyReLU(0.2, inplace=True), _conv(n6, 6, bias=c.bias)
        )
        self.d_conv = nn.Sequential(
            _conv(c.dim, c.dim, bias=c.bias),
            nn.LeakyReLU(0.2, inplace=True),
            _conv(c.dim, 3 * c.ds_kernel_size**2, c.kernel_conv_size, bias=c.bias),
        )

    def initial_flow_mask(self, like: Tensor, frames: Tensor | None = None, num_frames: int = 1) -> Tensor:
        """Open masks (logit ``init_mask_logit``) and zero flows, or with ``initial_flow = "global"`` and
        ``frames`` given, every flow of a direction set to that frame pair's global translation.

        Shapes:
            like: ``[N, C, H, W]`` (only its batch, size, dtype and device are used).
            frames: ``[N, 3, H, W]``, ``num_frames`` consecutive frames per clip.
            return: ``[N, 6n, H, W]``.
        """
        N, _, H, W = like.shape
        fm = like.new_zeros(N, 2 * self.num_flow, 3, H, W)
        fm[:, :, 2] = self.init_mask_logit
        if self.initial_flow == "global" and frames is not None:
            to_prev, to_next = neighbour_shifts(frames, num_frames)  # [N, 2] each
            fm[:, : self.num_flow, :2] = to_prev.to(fm.dtype)[:, None, :, None, None]
            fm[:, self.num_flow :, :2] = to_next.to(fm.dtype)[:, None, :, None, None]
        return fm.view(N, 6 * self.num_flow, H, W)  # [N, 6n, H, W]

    def forward(self, x: Tensor, *, num_frames: int, exposure: Tensor | None) -> tuple[Tensor, Tensor]:
        """Features and multi-flow-masks of every frame after the ``M`` blocks; the heads are separate.

        Returns:
            ``(F^{D,M}, f^{D,M})``. The image flow-masks are ``f_conv(f^{D,M})`` (``[B*T, 6, H, W]``,
            ``(dx, dy, logit)`` towards ``i - 1`` then ``i + 1`` in LR pixels) and the kernel logits
            ``d_conv(F^{D,M})`` (``[B*T, 3 k_d^2, H, W]``).

        Shapes:
            x: ``[B*T, 3, H, W]``.
            exposure: ``[B*T, d_u]`` or None.
            return: ``([B*T, C, H, W], [B*T, 6n, H, W])``.
        """
        feats = per_frame(self.feature_extractor, x)  # [B*T, C, H, W]
        flow_mask = self.initial_flow_mask(feats, x, num_frames)  # [B*T, 6n, H, W]
        for block in self.hrbp_blocks:
            feats, flow_mask = block(feats, flow_mask, num_frames=num_frames, exposure=exposure)
        return feats, flow_mask


class RestorationNet(nn.Module):
    """Net_R: features of ``[X_i, F_i^{D,M}]``, ``M`` HRBP blocks with DA attention, and the x4 output.

    The kernel logits ``K^D`` are encoded once per frame by ``kernel_encoder`` (conv3x3 ``3 k_d^2 -> C``,
    LeakyReLU, conv3x3 ``C -> C``; FMA-Net v1's ``d_conv`` of Net_R, per frame instead of per window); each
    block turns that into its own DA query ``k_i^j`` with one conv. The upsampler ``Up`` is v1's
    high-frequency branch: conv3x3 + LeakyReLU, two (conv to 4C, LeakyReLU, pixel shuffle x2), conv3x3 +
    LeakyReLU, conv3x3 ``C -> 3`` (``upsampler="pixelshuffle"``); or, for CPU presets, conv3x3 + LeakyReLU,
    conv3x3 ``C -> 3 * 16`` and one x4 pixel shuffle (``"light"``, no convolution at HR size). Its output is
    added to a fixed x4 interpolation of the input: bilinear as in Eq. 8, or bicubic (``base_upsampler``, the
    CPU presets' choice: an untrained network then starts at the bicubic baseline instead of bilinear's,
    which was 0.85 dB lower on our validation clips, a deficit a small network spends capacity on).

    Args:
        config: the architecture.
    """

    def __init__(self, config: FMANetPPConfig) -> None:
        super().__init__()
        c = config
        self.scale = c.scale
        self.base_mode = c.base_upsampler
        self.feature_extractor = _feature_extractor(c.in_channels + c.dim, c)
        self.kernel_encoder = nn.Sequential(
            _conv(3 * c.ds_kernel_size**2, c.dim, c.kernel_conv_size, bias=c.bias),
            nn.LeakyReLU(0.2, inplace=True),
            _conv(c.dim, c.dim, bias=c.bias),
        )
        self.hrbp_blocks = _hrbp_blocks(c, degradation_aware=True)
        self.res_conv1 = _conv(c.dim, c.dim, bias=c.bias)
        if c.upsampler == "pixelshuffle":
            self.upsample: nn.Module = PixelShuffleBlock(channels=c.dim, bias=c.bias)
            self.res_conv2: nn.Module = _conv(c.dim, c.in_channels, bias=c.bias)
        else:
            self.upsample = nn.Identity()
            self.res_conv2 = nn.Sequential(
                _conv(c.dim, c.in_channels * c.scale**2, bias=c.bias), nn.PixelShuffle(c.scale)
            )

    def forward(
        self,
        x: Tensor,
        degradation_features: Tensor,
        flow_mask: Tensor,
        kernel_features: Tensor,
        *,
        num_frames: int,
        exposure: Tensor | None,
    ) -> Tensor:
        """Restore every frame.

        Shapes:
            x: ``[B*T, 3, H, W]``.
            degradation_features: ``[B*T, C, H, W]`` (``F^{D,M}``).
            flow_mask: ``[B*T, 6n, H, W]`` (``f^{D,M}``, the initial flows of Net_R).
            kernel_features: ``[B*T, C, H, W]`` (``kernel_encoder(K^D logits)``).
            exposure: ``[B*T, d_u]`` or None.
            return: ``[B*T, 3, sH, sW]``.
        """

        def features(frame: Tensor, degradation: Tensor) -> Tensor:
            return self.feature_extractor(torch.cat((frame, degradation), dim=1))  # type: ignore[no-any-return]

        feats = per_frame(features, x, degradation_features)  # [B*T, C, H, W]
        for block in self.hrbp_blocks:
            feats, flow_mask = block(
                feats, flow_mask, num_frames=num_frames, exposure=exposure, kernel_features=kernel_features
            )
        res = per_frame(self.high_frequency, feats)  # [B*T, 3, sH, sW]
        base = F.interpolate(x, scale_factor=float(self.scale), mode=self.base_mode, align_corners=False)
        return res + base  # [B*T, 3, sH, sW]

    def high_frequency(self, feats: Tensor) -> Tensor:
        """``Up(F)``: the learned HR residual.

        Shapes:
            feats: ``[N, C, H, W]``.
            return: ``[N, 3, sH, sW]``.
        """
        res = F.leaky_relu(self.res_conv1(feats), 0.2)
        return self.res_conv2(self.upsample(res))  # [N, 3, sH, sW]


class FMANetPP(nn.Module):
    """FMA-Net++ (arXiv 2512.04390): T blurry LR frames in, T sharp x4 frames out.

    Attributes:
        config: the architecture.
        scale: 4.
        temporal_mode: ``"sequence"`` (every input frame gets an output frame).
        num_seq: training clip length (any ``T >= 1`` works at inference).
        temporal_radius: ``2 * num_blocks``; an output frame depends on input frames within this distance.
            A chunk of frames with at least this many frames of context on each side of a frame gives
            that frame exactly as a pass over the whole clip does (the sequence-end rule only acts at
            the first and last frame of the tensor passed in).
        channel_order: ``"RGB"``.
        ete: the frozen exposure encoder (``None`` when ``use_exposure`` is off). Its parameters have
            ``requires_grad=False``; the ETE pre-training stage turns them on and trains
            ``model.ete`` alone (``[N, 3, H, W] -> [N, d_u]``).

    Spatial size: any ``H, W >= 2`` (no multiple required). The MDTA attention is global over each
    frame, so spatial tiles do not reproduce a whole-frame pass exactly.

    Args:
        config: the architecture (see :data:`PRESETS`).
    """

    temporal_mode = "sequence"

    def __init__(self, config: FMANetPPConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.num_seq = config.num_seq
        self.temporal_radius = 2 * config.num_blocks
        self.channel_order = "RGB"
        self.size_multiple = 1  # any H, W >= MIN_SIZE (read by the pipeline's padder)
        self.ete: ExposureEncoder | None = None
        if config.use_exposure:
            self.ete = ExposureEncoder(width=config.ete_width, normalize=config.ete_normalize)
            self.ete.requires_grad_(False)
        self.degradation_learning_network = DegradationNet(config)
        self.restoration_network = RestorationNet(config)
        self._fused_cache: ComposedKernelCache[tuple[Tensor, Tensor | None]] = ComposedKernelCache()

    def _check_input(self, x: Tensor, y: Tensor | None, exposure: Tensor | None) -> None:
        if x.ndim != 5 or x.shape[1] != 3:
            raise InputShapeError(f"FMA-Net++ expects x of shape [B, 3, T, H, W], got {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        if T < 1 or min(H, W) < MIN_SIZE:
            raise InputShapeError(f"FMA-Net++ needs T >= 1 and H, W >= {MIN_SIZE}, got x {tuple(x.shape)}")
        s = self.scale
        if y is not None and tuple(y.shape) != (B, 3, T, s * H, s * W):
            raise InputShapeError(
                f"y must be [B, 3, T, {s}H, {s}W] = {(B, 3, T, s * H, s * W)}, got {tuple(y.shape)}"
            )
        d = self.config.exposure_dim
        if exposure is not None and d and tuple(exposure.shape) != (B, T, d):
            raise InputShapeError(f"exposure must be [B, T, d_u] = {(B, T, d)}, got {tuple(exposure.shape)}")

    def _fused_pair(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The convolutions that meet with no nonlinearity: ``d_conv[2]`` (inner), ``kernel_encoder[0]``."""
        inner: nn.Conv2d = self.degradation_learning_network.d_conv[2]  # type: ignore[assignment]
        outer: nn.Conv2d = self.restoration_network.kernel_encoder[0]  # type: ignore[assignment]
        return inner, outer

    def _fused_kernel_conv(self) -> tuple[Tensor, Tensor | None]:
        """``kernel_encoder[0] o d_conv[2]`` as one ``C -> C`` convolution (cached per weight version).

        The two convolutions meet with no nonlinearity in between (``K^D`` logits go straight into
        Net_R's kernel encoder), so their composition is one convolution of kernel size
        ``2 k - 1``; without ``y`` the ``3 k_d^2``-channel tensor between them never needs to exist.
        """
        inner, outer = self._fused_pair()

        def compose() -> tuple[Tensor, Tensor | None]:
            fused = compose_kernels(outer.weight.unsqueeze(2), inner.weight)[:, :, 0]  # [C, C, k', k']
            bias = outer.bias
            if inner.bias is not None:  # the inner bias passes through the outer kernel
                through = torch.einsum("omab,m->o", outer.weight, inner.bias)
                bias = through if bias is None else bias + through
            return fused, bias

        return self._fused_cache.get((inner.weight, outer.weight), compose)

    def _kernel_features_fused(self, feats: Tensor) -> Tensor:
        """Net_R's kernel features straight from Net_D's features, without autograd (see above).

        Zero padding between the two original convolutions makes the fused one differ on a border ring
        of width ``k // 2``; that ring is recomputed from thin slabs with the two convolutions.

        Shapes:
            feats: ``[B*T, C, H, W]`` (``F^{D,M}``).
            return: ``[B*T, C, H, W]``.
        """
        net_d, net_r = self.degradation_learning_network, self.restoration_network
        inner, outer = self._fused_pair()
        hidden = F.leaky_relu(net_d.d_conv[0](feats), 0.2)  # [B*T, C, H, W]
        ring = inner.kernel_size[0] // 2
        _, _, H, W = hidden.shape
        slab = 3 * ring  # rows of `hidden` that the first `ring` output rows depend on
        if ring and min(H, W) < 2 * slab:
            out = outer(inner(hidden))  # too small for the border recomputation to pay off
        else:
            fused, bias = self._fused_kernel_conv()
            out = F.conv2d(hidden, fused, bias, padding=fused.shape[-1] // 2)  # [B*T, C, H, W]
            if ring:

                def two_step(h: Tensor) -> Tensor:
                    return outer(inner(h))

                redo_border(out, hidden, two_step, ring, slab)
        return net_r.kernel_encoder[2](F.leaky_relu(out, 0.2))  # [B*T, C, H, W]

    def embed_exposure(self, x: Tensor) -> Tensor:
        """Exposure embeddings of every frame from the ETE (no gradient while the ETE is frozen).

        Raises:
            ConfigError: the network was built without exposure conditioning.

        Shapes:
            x: ``[B, 3, T, H, W]``.
            return: ``[B, T, d_u]``.
        """
        if self.ete is None:
            raise ConfigError("this FMA-Net++ was built with use_exposure=False (no ETE)")
        B, _, T, _, _ = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")  # [B*T, 3, H, W]
        if any(p.requires_grad for p in self.ete.parameters()):
            u = self.ete(frames)
        else:
            with torch.no_grad():
                u = self.ete(frames)
        return u.view(B, T, -1)  # [B, T, d_u]

    def _exposure(self, x: Tensor, exposure: Tensor | None) -> Tensor | None:
        if not self.config.use_exposure:
            return None
        return self.embed_exposure(x) if exposure is None else exposure

    def forward_degradation(self, x: Tensor, y: Tensor, exposure: Tensor | None = None) -> dict[str, Tensor]:
        """Net_D alone with the re-blurring (the paper's stage-2 training); Net_R is not run.

        Args and returned keys: as :meth:`forward` with ``y``, without ``output``.
        """
        self._check_input(x, y, exposure)
        out = self._degradation_outputs(x, y, self._exposure(x, exposure))
        return {k: v for k, v in out.items() if not k.startswith("_")}

    def _degradation_outputs(self, x: Tensor, y: Tensor | None, u: Tensor | None) -> dict[str, Tensor]:
        """Net_D (+ the FGDF with ``y``); underscored keys: what Net_R needs, folded ``[B*T, ...]``.

        Without ``y`` the kernel logits are not kept: ``_kernel_features`` (Net_R's encoding of them) is
        computed directly, through one fused convolution when autograd is off.
        """
        B, _, T, _, _ = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")  # [B*T, 3, H, W]
        u_flat = None if u is None else u.reshape(B * T, -1)  # [B*T, d_u]
        net_d, net_r = self.degradation_learning_network, self.restoration_network
        feats, flow_mask = net_d(frames, num_frames=T, exposure=u_flat)
        out: dict[str, Tensor] = {"_frames": frames, "_feats": feats, "_flow_mask": flow_mask}
        if u is not None:
            out["exposure"] = u
        if y is None:
            # Only Net_R's encoding of K^D is needed: without autograd, through the fused convolution.
            if torch.is_grad_enabled():
                out["_kernel_features"] = net_r.kernel_encoder(net_d.d_conv(feats))  # [B*T, C, H, W]
            else:
                out["_kernel_features"] = per_frame(self._kernel_features_fused, feats)  # [B*T, C, H, W]
            return out
        kernels = net_d.d_conv(feats)  # [B*T, 3 k_d^2, H, W]
        image_fm = net_d.f_conv(flow_mask)  # [B*T, 6, H, W]
        out["_kernels"] = kernels
        cfg = self.config
        recon, from_prev, from_next = exposure_aware_fgdf(
            rearrange(y, "b c t h w -> (b t) c h w"),
            image_fm,
            kernels,
            num_frames=T,
            kernel_size=cfg.ds_kernel_size,
            scale=cfg.scale,
            edge_mode=cfg.edge_mode,
        )

        def unfold(t: Tensor) -> Tensor:
            return rearrange(t, "(b t) c h w -> b c t h w", t=T)  # [B, c, T, h, w]

        out["recon"] = unfold(recon)
        out["hr_warp_prev"] = unfold(from_prev)
        out["hr_warp_next"] = unfold(from_next)
        out["image_flow_prev"] = unfold(image_fm[:, 0:2])
        out["image_flow_next"] = unfold(image_fm[:, 3:5])
        out["image_mask_prev"] = unfold(torch.sigmoid(image_fm[:, 2:3]))
        out["image_mask_next"] = unfold(torch.sigmoid(image_fm[:, 5:6]))
        out["kernels"] = unfold(kernels)
        return out

    def forward(
        self, x: Tensor, y: Tensor | None = None, exposure: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Restore a sequence (and, with ``y``, produce what the training losses need).

        Args:
            x: blurry LR frames, float in ``[0, 1]``, RGB.
            y: sharp HR frames (training); enables the re-blurring branch.
            exposure: per-frame exposure embeddings to use instead of the ETE's (ignored when the
                network has no exposure conditioning).

        Returns:
            A dict. Always:

            - ``output`` ``[B, 3, T, 4H, 4W]``: restored frames (not clamped).
            - ``exposure`` ``[B, T, d_u]``: the embeddings used (only with exposure conditioning).

            With ``y`` also (``i`` = frame index; at ``i = 0`` / ``T - 1`` the missing neighbour
            follows ``edge_mode``: a copy of ``Y_i`` for "replicate", zeros for "mask"; losses may skip
            those two entries):

            - ``recon`` ``[B, 3, T, H, W]``: ``y`` re-blurred into LR by the exposure-aware FGDF (Eq. 6).
            - ``hr_warp_prev`` / ``hr_warp_next`` ``[B, 3, T, 4H, 4W]``: ``Y_{i-1}`` / ``Y_{i+1}`` warped
              to frame ``i`` by ``f^Y`` and multiplied by its occlusion mask (the L_D warping term).
            - ``image_flow_prev`` / ``image_flow_next`` ``[B, 2, T, H, W]``: ``f^Y`` from frame ``i``
              towards ``i - 1`` / ``i + 1`` in LR pixels, ``(dx, dy)``, backward-warp convention
              ``Y_{i+-1 -> i}(p) = Y_{i+-1}(p + flow(p))`` (the RAFT-supervised term).
            - ``image_mask_prev`` / ``image_mask_next`` ``[B, 1, T, H, W]``: their occlusion masks in (0, 1).
            - ``kernels`` ``[B, 3 k_d^2, T, H, W]``: degradation-kernel logits ``K^D``, channels
              ``(source i-1 / i / i+1, row, col)``; softmax over the ``3 k_d^2`` channels gives the taps.

        Raises:
            InputShapeError: ``x``, ``y`` or ``exposure`` of the wrong shape.

        Shapes:
            x: ``[B, 3, T, H, W]``, ``T >= 1``, ``H, W >= 2``.
            y: ``[B, 3, T, 4H, 4W]``.
            exposure: ``[B, T, d_u]``.
            output: ``[B, 3, T, 4H, 4W]``.
        """
        self._check_input(x, y, exposure)
        T = x.shape[2]
        u = self._exposure(x, exposure)
        out = self._degradation_outputs(x, y, u)
        net_r = self.restoration_network
        if "_kernels" in out:
            kernel_features = net_r.kernel_encoder(out.pop("_kernels"))  # [B*T, C, H, W]
        else:
            kernel_features = out.pop("_kernel_features")
        restored = net_r(
            out.pop("_frames"),
            out.pop("_feats"),
            out.pop("_flow_mask"),
            kernel_features,
            num_frames=T,
            exposure=None if u is None else u.reshape(-1, u.shape[-1]),
        )
        out["output"] = rearrange(restored, "(b t) c h w -> b c t h w", t=T)  # [B, 3, T, 4H, 4W]
        return out


_PAPER = FMANetPPConfig()

# The base of the CPU presets: every mechanism, C = 24, M = 2, n = 3, k_d = 8, slim ETE; the
# costly parts of the paper network at this width (HR-size upsampling convs, 3x3 convs on the
# 3 k_d^2 kernel channels, per-block RDBs) are replaced by cheaper equivalents.
_SMALL = FMANetPPConfig(
    dim=24,
    num_blocks=2,
    num_flow=3,
    ds_kernel_size=8,
    num_rdb=1,
    growth_rate=12,
    num_dense_layer=2,
    num_transformer_block=1,
    num_heads=2,
    ffn_expansion_factor=2.0,
    block_rdb=False,
    kernel_query_size=1,
    kernel_conv_size=1,
    upsampler="light",
    num_seq=6,
    ete_width=8,
    etm_hidden=64,
)

PRESETS: dict[str, FMANetPPConfig] = {
    # The paper's network (C, heads, FFN, RRDB depth as FMA-Net v1; see docs/fmanetpp-design.md).
    "fmanetpp-paper": _PAPER,
    # Table 8's M = 1 and M = 2 ablations.
    "fmanetpp-paper-m1": dataclasses.replace(_PAPER, num_blocks=1),
    "fmanetpp-paper-m2": dataclasses.replace(_PAPER, num_blocks=2),
    # The CPU model of the first shipped weights (fmanetpp-small-v1.safetensors).
    "fmanetpp-small": _SMALL,
    # fmanetpp-small with the bicubic base of Eq. 8 (see RestorationNet).
    "fmanetpp-small-v2": dataclasses.replace(_SMALL, base_upsampler="bicubic"),
    # v2 whose Net_D starts from the global translation of each frame pair (models/global_motion.py)
    "fmanetpp-small-v2g": dataclasses.replace(_SMALL, base_upsampler="bicubic", initial_flow="global"),
    # Wider and deeper CPU model: C = 32, n = 2, two RDBs per feature extractor, bicubic base.
    "fmanetpp-medium": dataclasses.replace(_SMALL, dim=32, num_flow=2, num_rdb=2, base_upsampler="bicubic"),
    # The shipped small-v2g network made wider and deeper (C = 36, two RDBs per feature extractor), same
    # flows (n = 3, which C must divide) and global-motion start: the larger size of issue 13's two-size
    # comparison.
    "fmanetpp-medium-v2g": dataclasses.replace(
        _SMALL, dim=36, num_rdb=2, base_upsampler="bicubic", initial_flow="global"
    ),
    # For tests: the smallest network that still has every part.
    "fmanetpp-tiny": FMANetPPConfig(
        dim=12,
        num_blocks=1,
        num_flow=2,
        ds_kernel_size=6,
        num_rdb=1,
        growth_rate=4,
        num_dense_layer=1,
        num_transformer_block=1,
        num_heads=2,
        ffn_expansion_factor=1.5,
        num_seq=5,
        ete_width=8,
        etm_hidden=16,
    ),
}
