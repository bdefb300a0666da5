"""The training loop of FMA-Net++: three stages, one readable loop (nanoGPT style).

Stages (paper Sec. 5), each optional (``steps = 0`` skips it) and run in this order:

1. ``ete``: the exposure encoder alone, supervised contrastive loss on per-frame exposure labels; then
   frozen for good.
2. ``net_d``: the degradation network, L_D (re-blur l1 + lambda1 warp + lambda2 flow).
3. ``joint``: Net_D and Net_R together, l1(output, GT) + lambda3 * L_D.

Every stage: AdamW, linear warm-up then cosine decay to ``lr * min_lr_ratio``, global-norm gradient
clipping, autocast as ``precision`` says (float16 + GradScaler on CUDA by default, bfloat16 on request
on any device, see :func:`autocast_dtype`); optionally (``ema_decay``) an exponential moving
average of the weights, which validation and the written weights use and the next stage starts from.
A checkpoint (model, optimiser, EMA, stage, step) is written every ``ckpt_every`` steps and at each
stage's end, together with the current weights as a ``fmanetpp.weights/1`` safetensors file, so that a
run stopped at any point leaves usable weights;
``resume=True`` continues at the saved stage and step (batches are a pure function of the step, so the
data stream continues exactly). Under ``torchrun`` each process trains on its own batches and a
``DistributedDataParallel`` wrapper averages the gradients; only rank 0 validates, logs and saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fmanetpp_cli._files import atomic_output
from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.models import create_model
from fmanetpp_cli.models.fmanetpp import FMANetPP
from fmanetpp_cli.pipeline.device import check_device_spec, select_device
from fmanetpp_cli.train.config import STAGES, TrainConfig
from fmanetpp_cli.train.data import SCALE, DegradedClips, batch_at, collate, load_sources
from fmanetpp_cli.train.ema import WeightAverage
from fmanetpp_cli.train.losses import batch_psnr, degradation_loss, restoration_loss, supcon

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
LOG_FILE = "train.log"


@dataclass
class StepInfo:
    """What the loop reports after each optimiser step (for progress bars)."""

    stage: str
    step: int  # steps done in this stage
    total: int  # steps of this stage
    loss: float
    lr: float
    psnr: float | None  # training-batch PSNR (joint stage)
    val: dict[str, float] | None  # set on validation steps
    elapsed: float  # seconds since this process started training
    eta: float  # estimated seconds left for the whole run


@dataclass
class TrainResult:
    """Where a run left its files and what it last measured."""

    out_dir: Path
    weights: Path
    checkpoint: Path
    steps: dict[str, int] = field(default_factory=dict)
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    stopped_early: bool = False


def lr_at(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``base`` to ``base * min_ratio``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _ete(model: FMANetPP) -> nn.Module:
    """The exposure encoder; the ETE stage is skipped for networks without one."""
    if model.ete is None:
        raise ConfigError("this network has no exposure encoder (use_exposure = false)")
    return model.ete


def stage_parameters(model: FMANetPP, stage: str) -> list[nn.Parameter]:
    """The parameters a stage trains (the others are frozen for it)."""
    if stage == "ete":
        return list(_ete(model).parameters())
    params = list(model.degradation_learning_network.parameters())
    if stage == "joint":
        params += list(model.restoration_network.parameters())
    return params


class StageLoss(nn.Module):
    """The loss of one stage as a module, so that ``DistributedDataParallel`` can wrap it.

    Args:
        model: the FMA-Net++ network.
        stage: ``ete``, ``net_d`` or ``joint``.
        cfg: the run's config (loss weights).
    """

    def __init__(self, model: FMANetPP, stage: str, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.loss_cfg = cfg.loss
        self.teacher = None
        if cfg.loss.flow_target == "raft" and cfg.loss.flow > 0 and stage != "ete":
            from fmanetpp_cli.train.raft import RaftTeacher

            self.teacher = RaftTeacher(next(model.parameters()).device)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Loss and logged parts for one batch.

        Shapes:
            batch["lr"]: ``[B, 3, T, h, w]``; batch["gt"]: ``[B, 3, T, 4h, 4w]``; batch["levels"]: ``[B, T]``;
            flows ``[B, 2, T, h, w]``; returns a scalar loss.
        """
        lc = self.loss_cfg
        lr, gt = batch["lr"], batch["gt"]
        if self.stage == "ete":
            frames = lr.transpose(1, 2).flatten(0, 1)  # [B*T, 3, h, w]
            loss = supcon(_ete(self.model)(frames), batch["levels"].flatten(), lc.supcon_temperature)
            return loss, {"supcon": loss.item()}
        flow_w = 0.0 if lc.flow_target == "none" else lc.flow
        fkw = {
            "flow_prev": batch["flow_prev"],
            "flow_next": batch["flow_next"],
            "flow_valid": batch["flow_valid"],
        }
        if self.teacher is not None:  # RAFT pseudo-ground-truth instead of the synthetic flow
            prev, nxt = self.teacher(gt)
            fkw = {"flow_prev": prev, "flow_next": nxt, "flow_valid": torch.ones_like(batch["flow_valid"])}
        if self.stage == "net_d":
            out = self.model.forward_degradation(lr, gt)
            return degradation_loss(out, lr, gt, warp_weight=lc.warp, flow_weight=flow_w, **fkw)
        out = self.model(lr, gt)
        l_d, parts = degradation_loss(out, lr, gt, warp_weight=lc.warp, flow_weight=flow_w, **fkw)
        l_r = restoration_loss(out["output"], gt, lc.pixel)
        parts.update({lc.pixel: l_r.item(), "psnr": batch_psnr(out["output"], gt)})
        return l_r + lc.degradation * l_d, parts


@torch.no_grad()
def validate(
    model: FMANetPP, stage: str, batches: list[dict[str, Tensor]], cfg: TrainConfig
) -> dict[str, float]:
    """Validation figures of a stage on fixed held-out clips.

    - ``ete``: SupCon loss and nearest-class-mean accuracy of the embeddings.
    - ``net_d``: PSNR of the re-blurred LR frames against the input.
    - ``joint``: PSNR of the restored frames against the ground truth (and of bicubic, for reference).
    """
    from fmanetpp_cli.synth.exposure import bicubic_up

    model.eval()
    sums: dict[str, float] = {}
    for b in batches:
        lr, gt = b["lr"], b["gt"]
        if stage == "ete":
            emb = _ete(model)(lr.transpose(1, 2).flatten(0, 1))  # [B*T, d_u]
            labels = b["levels"].flatten()
            vals = {"supcon": supcon(emb, labels, cfg.loss.supcon_temperature).item()}
            classes = labels.unique()
            means = torch.stack([emb[labels == c].mean(0) for c in classes])  # [K, d_u]
            pred = classes[(emb @ means.T).argmax(1)]
            vals["acc"] = (pred == labels).float().mean().item()
        elif stage == "net_d":
            out = model.forward_degradation(lr, gt)
            vals = {"psnr_reblur": batch_psnr(out["recon"], lr)}
        else:
            out = model(lr)
            B, C, T, h, w = lr.shape
            up = (
                bicubic_up(lr.transpose(1, 2).flatten(0, 1)).unflatten(0, (B, T)).transpose(1, 2)
            )  # [B, 3, T, 4h, 4w]
            vals = {"psnr": batch_psnr(out["output"], gt), "psnr_bicubic": batch_psnr(up, gt)}
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + v / len(batches)
    model.train()
    return sums


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _log_to_file(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    pkg = logging.getLogger("fmanetpp_cli.train")
    pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    return handler


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward pass for a config's ``precision`` on ``device`` (None: float32).

    Raises:
        ConfigError: ``fp16`` off CUDA (float16 on the CPU is slow and underflows without loss scaling).
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs CUDA, the run is on {device}; use bf16 or fp32")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Run (or resume) the configured stages and write checkpoints and weights under ``cfg.out_dir``.

    Args:
        cfg: the run.
        resume: continue from ``out_dir/checkpoint.pt`` (its stage and step).
        on_step: called after every optimiser step on rank 0.

    Returns:
        The run's files and last validation figures.

    Raises:
        ConfigError: bad device, ``resume`` without a checkpoint, or a config unlike the checkpoint's model.
    """
    from fmanetpp_cli.checkpoints import save_model

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    check_device_spec(cfg.device)
    device = select_device(cfg.device, auto_index=int(os.environ.get("LOCAL_RANK", 0)))
    amp_dtype = autocast_dtype(cfg.precision, device)
    if distributed:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(out_dir) if master else None
    ckpt_path, weights_path = out_dir / CHECKPOINT, out_dir / WEIGHTS
    result = TrainResult(out_dir=out_dir, weights=weights_path, checkpoint=ckpt_path)
    try:
        model = create_model(cfg.model).to(device)
        if not isinstance(model, FMANetPP):
            raise ConfigError(f"{cfg.model} is not an FMA-Net++ model; `train` trains FMA-Net++ presets")
        stages = [s for s in STAGES if cfg.stage(s).steps > 0 and not (s == "ete" and model.ete is None)]
        done: dict[str, int] = {}
        state = None
        if resume:
            if not ckpt_path.is_file():
                raise ConfigError(f"--resume: no checkpoint at {ckpt_path}")
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            if state["model_name"] != cfg.model:
                raise ConfigError(f"{ckpt_path} holds {state['model_name']}, the config asks for {cfg.model}")
            model.load_state_dict(state["model"])
            done = dict(state["done"])
            finished = done.get(state["stage"], 0) >= cfg.stage(state["stage"]).steps
            if finished and "ema" in state:  # as without the stop: the next stage starts from the average
                model.load_state_dict(state["ema"]["shadow"])
            logger.info("resumed from %s: %s", ckpt_path, done)
        elif cfg.init_weights:
            _init_from(model, cfg.init_weights)

        logger.info(
            "run %s: model %s, stages %s, device %s, world %d, autocast %s",
            out_dir,
            cfg.model,
            stages,
            device,
            world,
            amp_dtype,
        )
        hr_patch = cfg.data.lr_patch * SCALE
        train_set = DegradedClips(
            load_sources(cfg.data.sources, cfg.data.downscale, hr_patch),
            cfg.data,
            cfg.seed,
            source_weights=[s.weight for s in cfg.data.sources],
        )
        val_specs = cfg.data.val_sources or cfg.data.sources
        val_sources = load_sources(val_specs, cfg.data.downscale, hr_patch)
        val_set = DegradedClips(val_sources, cfg.data, cfg.seed + 10_007)
        val_batches = [collate([val_set[i], val_set[i + 1]]) for i in range(0, max(2, cfg.data.val_clips), 2)]
        val_batches = [{k: v.to(device) for k, v in b.items()} for b in val_batches]

        total_steps = sum(cfg.stage(s).steps for s in stages)
        steps_before = sum(min(done.get(s, 0), cfg.stage(s).steps) for s in stages)
        t0, start_steps = time.time(), steps_before
        for stage_idx, stage in enumerate(stages):
            sc = cfg.stage(stage)
            step = done.get(stage, 0)
            if step >= sc.steps:
                continue
            model.requires_grad_(False)
            params = stage_parameters(model, stage)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=sc.lr, betas=sc.betas, weight_decay=sc.weight_decay)
            saved = state if state is not None and state.get("stage") == stage else {}
            if "optimizer" in saved:
                opt.load_state_dict(saved["optimizer"])
            ema = WeightAverage(model, sc.ema_decay) if sc.ema_decay > 0 else None
            if ema is not None and "ema" in saved:
                ema.load_state_dict(saved["ema"])
            scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
            loss_mod: nn.Module = StageLoss(model, stage, cfg)
            if distributed:
                ids = [device.index] if device.type == "cuda" else None
                loss_mod = nn.parallel.DistributedDataParallel(
                    loss_mod, device_ids=ids, find_unused_parameters=True
                )
            model.train()
            logger.info(
                "stage %s: steps %d..%d, lr %.2e, batch %d x %d",
                stage,
                step,
                sc.steps,
                sc.lr,
                sc.batch_size,
                world,
            )
            while step < sc.steps:
                lr_now = lr_at(step, sc.steps, sc.lr, sc.warmup, sc.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr_now
                batch = batch_at(train_set, stage_idx * 10_000_000 + step, sc.batch_size, rank, world)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, parts = loss_mod(batch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if sc.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, sc.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                step += 1
                done[stage] = step
                elapsed = time.time() - t0
                out_of_time = cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60
                if distributed:  # every process must stop at the same step
                    flag = torch.tensor(float(out_of_time), device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    out_of_time = bool(flag.item())
                if not master:
                    if out_of_time:
                        result.stopped_early = True
                        break
                    continue
                steps_now = sum(min(done.get(s, 0), cfg.stage(s).steps) for s in stages)
                rate = elapsed / max(1, steps_now - start_steps)
                val = None
                if step % cfg.val_every == 0 or step == sc.steps:
                    with _averaged(ema, model):
                        val = validate(model, stage, val_batches, cfg)
                    result.val[stage] = val
                    logger.info("val %s step %d: %s", stage, step, _fmt(val))
                if step % cfg.log_every == 0 or step == sc.steps:
                    logger.info(
                        "%s %d/%d loss %.5f lr %.2e %s",
                        stage,
                        step,
                        sc.steps,
                        loss.item(),
                        lr_now,
                        _fmt(parts),
                    )
                if step % cfg.ckpt_every == 0 or step == sc.steps or out_of_time:
                    ckpt = {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "stage": stage,
                        "done": done,
                        "model_name": cfg.model,
                        "config": cfg.to_dict(),
                    }
                    if ema is not None:
                        ckpt["ema"] = ema.state_dict()
                    _save_atomic(ckpt, ckpt_path)
                    with _averaged(ema, model):
                        save_model(
                            model,
                            weights_path,
                            metadata={"name": cfg.model, "training": _training_meta(cfg, done)},
                        )
                if on_step is not None:
                    on_step(
                        StepInfo(
                            stage=stage,
                            step=step,
                            total=sc.steps,
                            loss=loss.item(),
                            lr=lr_now,
                            psnr=parts.get("psnr"),
                            val=val,
                            elapsed=elapsed,
                            eta=rate * (total_steps - steps_now),
                        )
                    )
                if out_of_time:
                    logger.info(
                        "stopping: max_minutes=%s reached at %s step %d", cfg.max_minutes, stage, step
                    )
                    result.stopped_early = True
                    break
            if ema is not None and not result.stopped_early:  # the next stage starts from the average
                model.load_state_dict(ema.shadow)
            if stage == "ete":
                _ete(model).requires_grad_(False)  # frozen from here on (paper: a stable exposure reference)
            if result.stopped_early:
                break
        result.steps = done
        return result
    finally:
        if handler is not None:
            logging.getLogger("fmanetpp_cli.train").removeHandler(handler)
            handler.close()
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _init_from(model: FMANetPP, path: str) -> None:
    """Copy the weights of ``path`` (a weights file with the same parameters) into ``model``."""
    from fmanetpp_cli.checkpoints import load_model
    from fmanetpp_cli.errors import CheckpointError

    try:
        src = load_model(path)
    except CheckpointError as e:
        raise ConfigError(f"init_weights: {e}") from e
    if not isinstance(src, FMANetPP):
        raise ConfigError(f"init_weights: {path} holds a different network than the configured preset")
    try:
        model.load_state_dict(src.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"init_weights: {path} holds a different network than the configured preset") from e
    changed = sorted(
        f.name
        for f in dataclasses.fields(model.config)
        if getattr(model.config, f.name) != getattr(src.config, f.name)
    )  # parameter-free settings (e.g. initial_flow) may differ
    logger.info(
        "initialised from %s%s", path, f" (settings changed: {', '.join(changed)})" if changed else ""
    )


def _averaged(ema: WeightAverage | None, model: nn.Module) -> contextlib.AbstractContextManager:
    """The EMA weights inside the block when the stage keeps an average, else the model as it is."""
    return ema.applied(model) if ema is not None else contextlib.nullcontext(model)


def _fmt(d: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in d.items())


def _training_meta(cfg: TrainConfig, done: dict[str, int]) -> str:
    import json

    from fmanetpp_cli.train.config import portable_dict

    return json.dumps({"steps": done, "config": portable_dict(cfg)})
