"""Training loop for projectors over cached features: one process, or many under ``torchrun``.

The whole loop fits in a reader's head (nanoGPT-style): each epoch draws a permutation from ``(seed, epoch)``,
cuts it into global batches of ``batch_size`` rows, reads those rows from the (memory-mapped) feature arrays in a
background thread, runs the heads, and minimises a contrastive loss with AdamW under a warmup + cosine schedule.
Before the first and after each epoch it measures validation R@1 (mean of both directions; R@1 values within one
standard error of the best are ranked by a validation loss) and keeps the best weights, the starting ones included;
it stops after ``patience`` epochs without improvement.

Checkpoints are written atomically (temporary file, fsync, rename) every ``checkpoint_every`` steps and at each
epoch end. Because the data order is a pure function of ``(seed, epoch)``, a killed run restarted with the same
checkpoint path continues from the exact batch where the checkpoint was taken.

Multi-GPU / multi-node: under ``torchrun`` every rank reads its slice of each global batch, embeds it, and the
embeddings are gathered (with gradients) so the contrastive loss sees the whole global batch, exactly as one process
would; ``DistributedDataParallel`` averages the gradients. With the same seed and global batch, N processes train the
same model as one (up to float rounding); the tests check this with the gloo backend on CPU.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .losses import make_loss

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "unialign.checkpoint"

__all__ = ["PairModel", "TrainConfig", "TrainResult", "data_fingerprint", "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all plain values, stored in every checkpoint).

    ``batch_size`` is the global batch (split evenly over ranks); ``warmup`` is the fraction of all steps spent
    ramping the learning rate up linearly before the cosine decay to ``lr * min_lr_ratio``; ``patience`` counts
    epochs that do not replace the best weights (``TrainResult`` says when one does); ``checkpoint_every`` is in steps (0: at epoch ends only).
    """

    loss: str = "infonce"
    temperature: float = 0.07
    learn_temperature: bool = True
    batch_size: int = 1024
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    min_lr_ratio: float = 0.0
    patience: int = 5
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a run did: per-epoch history, validation R@1 before training, best epoch (-1: the starting weights, which
    compete in validation) and its validation R@1, total steps, whether it stopped early, and the share of step time
    spent waiting for data. Among the epochs (and the start) whose validation R@1 is within one binomial standard
    error (:func:`r1_tolerance`) of the highest seen, the lowest validation InfoNCE loss at a fixed temperature
    (``val_loss`` in the history) wins, and a clearly higher R@1 always does (``_improves``): a saturated R@1 still
    ranks epochs, and the returned weights are never more than one standard error below the best validation R@1
    seen, the start's included."""

    history: list
    initial_score: float
    best_epoch: int
    best_score: float
    n_steps: int
    stopped_early: bool
    data_time_fraction: float

    @property
    def start_kept(self) -> bool:
        """True when no epoch beat the starting weights on validation (they are what was returned)."""
        return self.best_epoch == -1 and bool(self.history) and not math.isnan(self.initial_score)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class PairModel(nn.Module):
    """The trainable pieces: an X head, an optional Y head (else Y passes through) and the loss's parameters."""

    def __init__(self, x_head: nn.Module, y_head: nn.Module | None, loss: nn.Module):
        super().__init__()
        self.x_head = x_head
        self.y_head = y_head
        self.loss = loss

    def embed(self, xb: torch.Tensor, yb: torch.Tensor):
        u = self.x_head(xb)
        v = self.y_head(yb) if self.y_head is not None else yb
        return nn.functional.normalize(u.float(), dim=1), nn.functional.normalize(v.float(), dim=1)

    def forward(self, xb, yb, gx=None, gy=None):
        u, v = self.embed(xb, yb)
        if _world_size() > 1:
            u, v = _GatherWithGrad.apply(u), _GatherWithGrad.apply(v)
            if gx is not None:
                gx, gy = _gather(gx), _gather(gy)
        with torch.autocast(device_type=u.device.type, enabled=False):  # logits in float32 even under AMP
            return self.loss(u.float(), v.float(), gx, gy)


# ---- distributed helpers ---------------------------------------------------------------------------------------
def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather equal-sized shards; the backward sums every rank's gradient and keeps this rank's slice.

    (Written out because gloo lacks the reduce-scatter that ``torch.distributed.nn.all_gather`` may use.)
    """

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return _gather(x)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        r = dist.get_rank()
        return grad[r * ctx.n:(r + 1) * ctx.n]


def maybe_init_distributed() -> bool:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); True when distributed.

    :func:`align._distributed.init_distributed`: one joiner for training and extraction, which also makes
    ``cuda:LOCAL_RANK`` the current device.
    """
    from align._distributed import init_distributed

    return init_distributed()


# ---- data -------------------------------------------------------------------------------------------------------
def _batch_indices(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's global batches, shape (n_batches, batch_size): a pure function of (seed, epoch)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    n_batches = n // batch_size
    return perm[: n_batches * batch_size].reshape(n_batches, batch_size)


class _Prefetcher:
    """Read batches in a background thread (numpy fancy indexing on a memmap releases the GIL)."""

    def __init__(self, make_batch: Callable[[int], Any], batch_ids: range, depth: int = 3):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()

        def work():
            try:
                for b in batch_ids:
                    if self._stop.is_set():
                        return
                    self._q.put((b, make_batch(b)))
                self._q.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
                self._q.put(exc)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        while not self._q.empty():
            self._q.get_nowait()


def _lr_lambda(total_steps: int, warmup: float, min_ratio: float):
    warm = max(1, math.ceil(warmup * total_steps)) if warmup > 0 else 0

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


#: Fixed temperature of the validation loss that breaks ties in validation R@1 (saturated R@1 cannot rank epochs).
VAL_TEMPERATURE = 0.05


def _val_scores(model: PairModel, X_val, Y_val, positives, device) -> tuple[float, float]:
    """Validation R@1 (mean of both directions) and the symmetric InfoNCE loss at :data:`VAL_TEMPERATURE`."""
    from align.evaluation import retrieval_metrics

    model.eval()
    with torch.no_grad():
        outs_u, outs_v = [], []
        for s in range(0, X_val.shape[0], 4096):
            xb = torch.as_tensor(np.asarray(X_val[s:s + 4096]), dtype=torch.float32, device=device)
            yb = torch.as_tensor(np.asarray(Y_val[s:s + 4096]), dtype=torch.float32, device=device)
            u, v = model.embed(xb, yb)
            outs_u.append(u)
            outs_v.append(v)
        u, v = torch.cat(outs_u).float(), torch.cat(outs_v).float()
        loss = 0.5 * (_nce(u, v, positives) + _nce(v, u, positives))
    model.train()
    res = retrieval_metrics(u, v, positives, ks=(1,))
    return res.recall_at(1), loss


def _nce(u, v, positives, block: int = 2048) -> float:
    """Mean over rows of ``-log`` (softmax mass on the row's positives) of ``u v^T / VAL_TEMPERATURE``."""
    total, n = 0.0, u.shape[0]
    for s in range(0, n, block):
        logits = (u[s:s + block] @ v.T) / VAL_TEMPERATURE
        if positives is None:
            pos = logits.diagonal(offset=s)
            total += float((torch.logsumexp(logits, 1) - pos).sum())
        else:
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for i in range(logits.shape[0]):  # symmetric relation: row i's positives are its group
                mask[i, torch.as_tensor(positives[s + i], device=logits.device)] = True
            pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), 1)
            total += float((torch.logsumexp(logits, 1) - pos).sum())
    return total / max(n, 1)


def r1_tolerance(score: float, n_val: int) -> float:
    """One binomial standard error of a validation R@1 of ``score`` on ``n_val`` pairs: R@1 values closer than
    this to the best are not told apart by the validation set, so the validation loss ranks them."""
    return math.sqrt(max(score * (1.0 - score), 0.0) / max(n_val, 1))


def _improves(state: dict, score: float, loss: float, n_val: int | None) -> bool:
    """Whether an epoch of validation ``score`` (R@1) and ``loss`` replaces the best weights so far.

    Without validation the latest epoch wins. With it, let ``top`` be the highest R@1 seen (the start's included)
    and ``tol`` = :func:`r1_tolerance` at ``top``: an epoch is eligible when ``score >= top - tol``, and replaces the
    best when it is eligible and either clearly higher (``score > best + tol``), or lower in validation loss, or the
    best itself is no longer eligible. So the returned weights are always within one standard error of the best R@1
    seen, and among those the lowest validation loss wins: a saturated R@1 (0.997 on 2,900 pairs moves by single
    items) does not freeze the start.
    """
    if n_val is None:
        return True
    top = max(state.get("top_score", state["best_score"]), score)
    state["top_score"] = top
    tol = r1_tolerance(top, n_val)
    if score < top - tol:
        return False
    best, best_loss = state["best_score"], state.get("best_loss", float("inf"))
    return score > best + tol or loss < best_loss or best < top - tol


def _val_r1(model: PairModel, X_val, Y_val, positives, device) -> float:
    return _val_scores(model, X_val, Y_val, positives, device)[0]


def _positives_from_groups(groups: np.ndarray | None):
    """For each row, the rows sharing its group (None: row i pairs with row i)."""
    if groups is None:
        return None
    order = np.argsort(groups, kind="stable")
    sorted_g = groups[order]
    bounds = np.flatnonzero(np.diff(sorted_g)) + 1
    members = {int(sorted_g[s[0]]): s for s in np.split(order, bounds)}
    return [members[int(g)] for g in groups]


def data_fingerprint(A: Any, max_rows: int = 4096) -> str:
    """A cheap fingerprint of a (memory-mapped) feature array: sha256 of its shape and of up to ``max_rows`` evenly
    spaced rows as float32. Two different feature files (another encoder, another split) differ in it."""
    import hashlib

    A = np.asarray(A) if not isinstance(A, np.ndarray) else A
    n = A.shape[0]
    rows = np.unique(np.linspace(0, n - 1, num=min(n, max_rows)).astype(np.int64)) if n else np.zeros(0, np.int64)
    h = hashlib.sha256(repr(tuple(A.shape)).encode())
    h.update(np.ascontiguousarray(A[rows], dtype=np.float32).tobytes())
    return h.hexdigest()


def _check_same_inputs(path: Path, saved: dict, now: dict) -> None:
    """Refuse to resume a checkpoint written for other encoders or other training rows."""
    differ = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if key in ("X", "Y"):
            differ.append(f"the {key} training features (another file, encoder or split)")
        else:
            differ.append(f"{key} {a!r} in the checkpoint vs {b!r} now")
    if differ:
        raise ValueError(
            f"checkpoint {str(path)!r} was written for other inputs: {'; '.join(differ)}; resume with the same "
            "features and encoders, or give another --checkpoint path to start over"
        )


# ---- the loop ---------------------------------------------------------------------------------------------------
def _load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise ValueError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a unialign training checkpoint; pick another path or delete it")
    return ckpt


def train(
    x_head: nn.Module,
    y_head: nn.Module | None,
    X: Any,
    Y: Any,
    *,
    config: TrainConfig = TrainConfig(),
    groups: np.ndarray | None = None,
    X_val: Any = None,
    Y_val: Any = None,
    groups_val: np.ndarray | None = None,
    device: Any = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    metadata: dict | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``x_head`` (and ``y_head``) in place so that ``normalize(x_head(X[i]))`` matches ``Y[i]``'s embedding.

    Parameters
    ----------
    x_head, y_head : torch.nn.Module
        Trainable maps; ``y_head=None`` leaves Y fixed (one-sided alignment into Y's space).
    X, Y : array of shape (n, d_x), (n, d_y)
        Paired training features, numpy arrays or memory-maps (rows are read per batch, never all at once).
    config : TrainConfig
    groups : int array of shape (n,), optional
        Rows with equal group are positives of each other (e.g. five captions of one image).
    X_val, Y_val, groups_val : optional
        Validation pairs for early stopping on R@1; without them every epoch is kept and the last one wins.
    device : optional
        Default: CUDA (this rank's GPU under torchrun) when available, else CPU.
    checkpoint : path, optional
        Where to write resumable checkpoints; with ``resume=True`` an existing file there is continued.
    metadata : dict, optional
        Extra plain values to store in the checkpoint (e.g. the projector kind and parameters).
    callback : callable, optional
        Called with each epoch's record (on rank 0 only).

    Returns
    -------
    TrainResult
        The heads are left holding the best validation weights.
    """
    distributed = maybe_init_distributed()
    world, rank = _world_size(), _rank()
    if device is None:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0)
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    n = X.shape[0]
    batch_size = min(config.batch_size, n - n % world if n >= world else n)
    if batch_size % world:
        raise ValueError(
            f"`batch_size` ({config.batch_size}) must be divisible by the number of processes ({world}) so every rank "
            "gets an equal share; change --batch-size"
        )
    local = batch_size // world
    steps_per_epoch = max(1, n // batch_size)
    total_steps = steps_per_epoch * config.max_epochs

    loss_kw = ({"temperature": config.temperature, "learn_temperature": config.learn_temperature}
               if config.loss == "infonce" else {})
    model = PairModel(x_head, y_head, make_loss(config.loss, **loss_kw)).to(device)
    if distributed:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp = model
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, config.warmup, config.min_lr_ratio))

    state = {"epoch": 0, "batch": 0, "step": 0, "best_score": -1.0, "best_epoch": -1, "bad_epochs": 0,
             "history": [], "best_state": None, "stopped": False}
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path)
        saved = {k: v for k, v in ckpt["config"].items()}
        if saved != config.to_dict():
            diff = sorted(k for k in saved if saved.get(k) != config.to_dict().get(k))
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r} was written with different settings ({', '.join(diff)}); "
                "use the same settings to resume, or another --checkpoint path to start over"
            )
        if ckpt["n_rows"] != n:
            raise ValueError(f"checkpoint {str(ckpt_path)!r} was trained on {ckpt['n_rows']} rows, got {n}")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:  # torch lists every mismatched tensor over many lines
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r} holds a model of another shape (other feature widths or projector "
                "parameters); use the same features and settings to resume, or another --checkpoint path to start over"
            ) from None
        _check_same_inputs(ckpt_path, ckpt.get("metadata") or {}, metadata or {})
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state.update(ckpt["state"])
        log.info("resumed from %s at epoch %d batch %d", ckpt_path, state["epoch"], state["batch"])

    def save_checkpoint():
        if ckpt_path is None or rank != 0:
            return
        from align._io import atomic_write

        payload = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "n_rows": int(n),
                   "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "state": state, "metadata": metadata or {}}
        import io

        buffer = io.BytesIO()  # serialise first: torch.save hides a failed write (a full disk) as RuntimeError
        torch.save(payload, buffer)
        with atomic_write(ckpt_path) as f:
            f.write(buffer.getbuffer())

    positives_val = _positives_from_groups(groups_val) if X_val is not None else None
    groups_t = None if groups is None else np.asarray(groups, dtype=np.int64)
    amp = config.amp and device.type == "cuda"
    pin = device.type == "cuda"

    def make_batch(b_and_rows):
        rows = np.sort(b_and_rows)
        xb = torch.from_numpy(np.ascontiguousarray(X[rows], dtype=np.float32))
        yb = torch.from_numpy(np.ascontiguousarray(Y[rows], dtype=np.float32))
        gb = torch.from_numpy(groups_t[rows]) if groups_t is not None else None
        if pin:
            xb, yb = xb.pin_memory(), yb.pin_memory()
        return xb, yb, gb

    if X_val is not None and state["step"] == 0 and state["epoch"] == 0:
        # The starting point competes too (it matters for warm starts): best_epoch -1 means "never improved on it".
        state["initial_score"], state["initial_loss"] = _val_scores(model, X_val, Y_val, positives_val, device)
        state.update(best_score=state["initial_score"], best_loss=state["initial_loss"], best_epoch=-1,
                     best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    model.train()
    data_time_total = step_time_total = 0.0
    while state["epoch"] < config.max_epochs and not state["stopped"]:
        epoch = state["epoch"]
        batches = _batch_indices(n, batch_size, config.seed, epoch)
        if batches.shape[0] == 0:
            batches = np.random.default_rng([config.seed, epoch]).permutation(n)[None, : batch_size]
        start_b = state["batch"]
        fetch = _Prefetcher(lambda b, batches=batches: make_batch(batches[b, rank * local:(rank + 1) * local]),
                            range(start_b, batches.shape[0]))
        losses, data_time, step_time = [], 0.0, 0.0
        t_epoch = time.perf_counter()
        t0 = time.perf_counter()
        for b, (xb, yb, gb) in fetch:
            t_data = time.perf_counter()
            data_time += t_data - t0
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            gb = gb.to(device) if gb is not None else None
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                loss = ddp(xb, yb, gb, gb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if model.loss.log_scale.requires_grad:  # keep the temperature inside its clamp
                with torch.no_grad():
                    model.loss.log_scale.clamp_(max=math.log(model.loss.max_logit_scale))
            losses.append(float(loss.detach()))
            state["step"] += 1
            state["batch"] = b + 1
            t0 = time.perf_counter()
            step_time += t0 - t_data
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0 and b + 1 < batches.shape[0]:
                save_checkpoint()
        fetch.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record = {"epoch": epoch, "step": state["step"], "loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": float(sched.get_last_lr()[0]), "logit_scale": float(model.loss.logit_scale.detach()),
                  "epoch_time_s": time.perf_counter() - t_epoch,
                  "data_time_fraction": data_time / max(1e-12, data_time + step_time)}
        data_time_total += data_time
        step_time_total += step_time
        val_loss = 0.0
        if X_val is not None:
            score, val_loss = _val_scores(model, X_val, Y_val, positives_val, device)
            record["val_R@1"] = score
            record["val_loss"] = val_loss
        else:
            score = float(epoch)  # no validation: the latest epoch is the best (_improves)
        if _improves(state, score, val_loss, None if X_val is None else int(X_val.shape[0])):
            state.update(best_score=score, best_loss=val_loss, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= config.patience:
                state["stopped"] = True
        state["history"].append(record)
        state["epoch"] = epoch + 1
        state["batch"] = 0
        save_checkpoint()
        if callback is not None and rank == 0:
            callback(record)
        log.info("epoch %d: %s", epoch, record)

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    return TrainResult(
        history=list(state["history"]),
        initial_score=float(state.get("initial_score", float("nan"))),
        best_epoch=int(state["best_epoch"]),
        best_score=float(state["best_score"]) if X_val is not None else float("nan"),
        n_steps=int(state["step"]),
        stopped_early=bool(state["stopped"]),
        data_time_fraction=data_time_total / max(1e-12, data_time_total + step_time_total),
    )
