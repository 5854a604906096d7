"""``train_fused(cfgs)``: K runs of one pattern and shape (seeds, optimizer settings) as one fused model.

Each member ends as ``train(cfg)`` would leave it: its own data stream (its seed), losses, validation metrics with
the ordinary names, pruning decision, run directory, checkpoint and summary. The loop is a bare one, not
Lightning's: Lightning drives one model, one optimizer, one checkpoint and one set of callbacks per run and reads
values back to the host every step; here K members share a model and one step per batch of K, and the pieces an
ordinary run is made of (datamodule, metrics, divergence guard, schedule, checkpoint IO, summary format) are reused.

A member stops on its own (diverged, pruned, stopped by its callback, failed callback): it is written out, and the
fused model is rebuilt without it at once (one more CUDA graph capture), so a stopped member costs nothing after.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from archsearch.errors import ConfigError
from archsearch.fused.checkpoint import (
    MemberState,
    OrdinaryOptimizer,
    lightning_loops,
    member_payload,
    read_member,
    write_member,
)
from archsearch.fused.evaluate import MemberEval, validate
from archsearch.fused.feed import BatchFeed
from archsearch.fused.member import MemberModule, MemberRun, MemberTrainer
from archsearch.fused.model import FusedLM, check_fusable, layout_of
from archsearch.fused.optim import FusedAdamW
from archsearch.fused.step import FusedStep
from archsearch.layers.backend import import_error
from archsearch.train.callbacks import Diverged, InjectedCrash
from archsearch.train.config import TrainConfig
from archsearch.train.kernel_cache import keep_autotuning, restore_autotuning, use_kernel_caches

log = logging.getLogger("archsearch.fused")

# What members may differ in: their seed, their optimizer settings, their run's name and place, their guards.
MEMBER_FIELDS = (
    "seed",
    "lr",
    "min_lr_ratio",
    "warmup",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "name",
    "runs_dir",
    "divergence",
    "fault_injection",
)
PRECISIONS = {
    "32-true": (torch.float32, None),
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "64-true": (torch.float64, None),
}
GRAPH_WARMUP = 3  # eager steps before a capture


def check_fusable_configs(cfgs: Sequence[TrainConfig]) -> None:
    """Raise unless the runs can train as one fused model: every field but :data:`MEMBER_FIELDS` equal, one device.

    Raises:
        ConfigError: naming the first differing field and the two values, or a setting fusion does not support.
    """
    if not cfgs:
        raise ConfigError("train_fused needs at least one TrainConfig", key="cfgs")
    first = cfgs[0]
    for field in dataclasses.fields(TrainConfig):
        if field.name in MEMBER_FIELDS:
            continue
        a = getattr(first, field.name)
        for k, cfg in enumerate(cfgs[1:], start=1):
            b = getattr(cfg, field.name)
            if a != b:
                raise ConfigError(
                    f"fused members must share {field.name!r}: member 0 has {a!r}, member {k} has {b!r}",
                    "train_fused",
                    field.name,
                    hint=f"only {', '.join(MEMBER_FIELDS)} may differ",
                )
    names = [c.name for c in cfgs if c.name is not None]
    if len(set(names)) != len(names):
        raise ConfigError(f"fused members need distinct run names, found {names}", "train_fused", "name")
    if str(first.devices) not in ("1", "auto") or first.strategy not in ("auto", "single"):
        raise ConfigError(
            f"fused training runs on one device, found devices={first.devices!r}, strategy={first.strategy!r}",
            "train_fused",
            "devices",
        )


def train_fused(
    cfgs: Sequence[TrainConfig],
    callbacks_per_member: Sequence[Sequence[Any]] | None = None,
    *,
    graph: bool | None = None,
    compile: bool | None = None,
) -> list[dict[str, Any]]:
    """Train ``cfgs`` (same pattern and shapes; see :data:`MEMBER_FIELDS`) as one fused model; one summary each.

    Args:
        cfgs: one TrainConfig per member (not modified).
        callbacks_per_member: per member, objects with Lightning's ``on_validation_end(trainer, pl_module)`` (e.g.
            the sweep's TrialReporter), called after each of that member's validations with the views
            :class:`~archsearch.fused.member.MemberTrainer` and :class:`~archsearch.fused.member.MemberModule`.
            ``optuna.TrialPruned`` stops the member as "pruned", ``trainer.should_stop = True`` as "ok", any other
            exception as "failed" (the others train on).
        graph: capture the fused step in a CUDA graph (None: on CUDA). A failed capture trains eagerly and says why
            (``summary["fused"]["graph_fallback"]``).
        compile: run the residual add + norm and the AdamW update through torch.compile (None: on CUDA when
            Triton imports); a failed compilation runs them eagerly and says why (``compile_fallback``).

    Returns:
        One summary per member, in order: ``train()``'s keys (``status``: ok, diverged, pruned, failed), plus
        ``fused`` (members, index, graph use, the job's tokens/s).

    Raises:
        ArchsearchError: configs that cannot be fused, a bad config, pattern or data (before training starts).
        Exception: what stopped the whole job (a crash); every member still training has a "failed" summary. An
            out-of-memory job returns its "failed" summaries instead, as ``train()`` does.
    """
    cfgs = [copy.deepcopy(c) for c in cfgs]
    for k, cfg in enumerate(cfgs):
        cfg.validate(f"TrainConfig of member {k}")
    check_fusable_configs(cfgs)
    callbacks = (
        [list(cbs) for cbs in callbacks_per_member]
        if callbacks_per_member is not None
        else [[] for _ in cfgs]
    )
    if len(callbacks) != len(cfgs):
        raise ConfigError(
            f"{len(callbacks)} callback lists for {len(cfgs)} members", "train_fused", "callbacks_per_member"
        )
    return _FusedJob(cfgs, callbacks, graph, compile).execute()


class _FusedJob:
    """The state of one ``train_fused`` call."""

    def __init__(
        self, cfgs: list[TrainConfig], callbacks: list[list[Any]], graph: bool | None, compile: bool | None
    ):
        self.members = [
            MemberRun(k, cfg, cbs) for k, (cfg, cbs) in enumerate(zip(cfgs, callbacks, strict=True))
        ]
        self.cfg = cfgs[0]  # the shared fields
        self.graph_requested = graph
        self.compile_requested = compile
        self.compile_fallback: str | None = None
        self.graph_used = False
        self.graph_fallback: str | None = None
        self.job_warm_tokens = 0
        self.job_warm_time = 0.0
        self.started_perf = time.perf_counter()  # the clock of time_to_first_step_s, as train()'s
        self.time_to_first_step: float | None = None

    # ---- setup ------------------------------------------------------------------------------------------------
    def execute(self) -> list[dict[str, Any]]:
        use_kernel_caches()  # before the kernels are imported, as train() does
        self._setup()
        try:
            self._run()
        except BaseException as exc:
            oom = isinstance(exc, torch.OutOfMemoryError)
            text = str(exc).splitlines()[0] if str(exc) else ""
            reason = f"out of memory: {text}" if oom else f"{type(exc).__name__}: {exc}"
            for m in self.members:
                if m.running:
                    m.finish("failed", reason, self._extra())
            if not oom:
                raise
        return [m.summary for m in self.members]

    def _setup(self) -> None:
        from archsearch.train.run import device_name, peak_flops, train_flops_per_token
        from archsearch.train.trainer import resolve_precision

        cfg = self.cfg
        patterns = [m.setup() for m in self.members]
        pattern = check_fusable(patterns[0])
        for m in self.members[1:]:
            if m.pattern_text != self.members[0].pattern_text:
                raise ConfigError(
                    f"fused members must train one pattern: member 0 resolves to {self.members[0].pattern_text!r}, "
                    f"member {m.index} to {m.pattern_text!r}",
                    "train_fused",
                    "pattern",
                )
            a, b = self.members[0].model_cfg.to_dict(), m.model_cfg.to_dict()
            if a != b:
                key = next(k for k in a if a[k] != b.get(k))
                raise ConfigError(
                    f"fused members must share the model: model.{key} is {a[key]!r} for member 0, {b.get(key)!r} "
                    f"for member {m.index}",
                    "train_fused",
                    f"model.{key}",
                )
        self.pattern, self.model_cfg = pattern, self.members[0].model_cfg
        precision = resolve_precision(cfg.precision, cfg.accelerator)
        if precision not in PRECISIONS:
            raise ConfigError(
                f"fused training supports precision {', '.join(PRECISIONS)}, found {precision!r}",
                "train_fused",
                "precision",
            )
        self.precision = precision
        self.dtype, self.autocast = PRECISIONS[precision]
        use_cuda = cfg.accelerator in ("cuda", "gpu") or (
            cfg.accelerator == "auto" and torch.cuda.is_available()
        )
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        self.use_graph = self.device.type == "cuda" and (self.graph_requested is None or self.graph_requested)
        if not self.use_graph and self.device.type == "cuda":
            self.graph_fallback = "graphs turned off (graph=False)"
        triton = import_error("triton") is None
        self.compile = self.device.type == "cuda" and triton and self.compile_requested is not False
        if cfg.compile:
            log.warning(
                "compile=True: fused training does not compile the whole model; it compiles its element-wise parts "
                "on CUDA (train_fused(compile=...))"
            )
        self.layout = layout_of(self.model_cfg, pattern)
        self.ordinary = OrdinaryOptimizer(self.layout, self.model_cfg, pattern, self.device.type)
        self.flops_per_token = train_flops_per_token(pattern, self.model_cfg, cfg.seq_len)
        self.peak_flops = peak_flops(cfg.card, precision)
        self.device_name = device_name(self.device.type)
        embedding = math.prod(self.layout.shapes[self.layout.names.index("embedding.weight")])
        self.params = (self.layout.size, self.layout.size - embedding)  # as HybridLM.num_params counts them
        for m in self.members:
            if m.checkpoint_path is not None:
                ckpt = m.load_checkpoint()
                m.state = read_member(ckpt, self.layout, self.ordinary, dtype=self.dtype, device=self.device)
            else:
                row = self.layout.row(m.init_state_dict, dtype=self.dtype, device=self.device)
                m.init_state_dict = None
                m.state = MemberState(row, torch.zeros_like(row), torch.zeros_like(row), 0)
            m.evaluator = MemberEval(m.datamodule, self.device)
            m.write_config()
        self.val_batches_per_validation = sum(
            min(cfg.val_batches, len(loader)) for loader in self.members[0].datamodule.val_dataloader()
        )
        if not cfg.quiet:
            print(
                f"archsearch train (fused, {len(self.members)} members): {self.members[0].pattern_text} "
                f"({self.params[0]:,} params each) on {self.device}",
                file=sys.stderr,
            )

    def _extra(self) -> dict[str, Any]:
        job_tps = self.job_warm_tokens / self.job_warm_time if self.job_warm_time > 0 else None
        job_mfu = None
        if job_tps and self.flops_per_token and self.peak_flops and self.device.type == "cuda":
            job_mfu = self.flops_per_token * job_tps / self.peak_flops
        return {
            "params": self.params[0],
            "non_embedding_params": self.params[1],
            "precision": self.precision,
            "device": str(self.device),
            "device_name": self.device_name,
            "flops_per_token": self.flops_per_token,
            "peak_flops": self.peak_flops,
            "cuda_graphs": "graphed"
            if self.graph_used
            else f"eager: {self.graph_fallback or 'not captured'}",
            "time_to_first_step_s": (
                round(self.time_to_first_step, 3) if self.time_to_first_step is not None else None
            ),
            "fused": {
                "members": len(self.members),
                "graph": self.graph_used,
                "graph_fallback": self.graph_fallback,
                "compiled": self.compile,
                "compile_fallback": self.compile_fallback,
                "job_tokens_per_s": job_tps,
                "job_mfu": job_mfu,
            },
        }

    # ---- training ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        max_steps = self.cfg.max_steps
        while True:
            running = [m for m in self.members if m.running]
            if not running:
                return
            first = min(m.step for m in running)
            group = [m for m in running if m.step == first]
            if first >= max_steps:  # resumed at the end: the final validation and save, as train() does
                self._finish_at_end(group)
                continue
            later = [m.step for m in running if m.step > first]
            self._train_group(group, min([max_steps, *later]))

    def _finish_at_end(self, group: list[MemberRun]) -> None:
        flat = torch.stack([m.state.row for m in group])
        model = FusedLM(self.model_cfg, self.pattern, flat)
        need = [m if (not m.val_history or m.val_history[-1][0] != m.step) else None for m in group]
        if any(need):
            self._validate(model, group, [m is not None for m in need])
        for k, m in enumerate(group):
            self._save(m, MemberState(flat[k], m.state.exp_avg, m.state.exp_avg_sq, m.step), len(group))
            m.finish("ok", None, self._extra())

    def _note_step_kind(self, stepper: FusedStep) -> None:
        """Whether the job's steps ran graphed and compiled, and why not (what the summaries report)."""
        self.graph_used = self.graph_used or stepper.graphed
        if stepper.fallback_reason and self.use_graph:
            self.graph_fallback = stepper.fallback_reason
        if stepper.compile_fallback:
            self.compile, self.compile_fallback = False, stepper.compile_fallback

    def _train_group(self, group: list[MemberRun], stop_at: int) -> None:
        """Train ``group`` (all at one step) together until ``stop_at`` or until one of them stops."""
        cfg, k = self.cfg, len(group)
        flat = torch.stack([m.state.row for m in group])
        opt = FusedAdamW(
            flat,
            torch.zeros_like(flat),
            self.layout.decay_size,
            [m.hparams for m in group],
            steps=[m.step for m in group],
            exp_avg=torch.stack([m.state.exp_avg for m in group]),
            exp_avg_sq=torch.stack([m.state.exp_avg_sq for m in group]),
            compiled=self.compile,
        )
        for m in group:
            m.state = None  # the fused buffers hold it now
        model = FusedLM(self.model_cfg, self.pattern, flat)
        model.compile_norm = self.compile
        stepper = FusedStep(
            model,
            opt,
            (cfg.batch_size, cfg.seq_len),
            cfg.grad_accum,
            self.autocast,
            graph=self.use_graph,
            warmup=GRAPH_WARMUP,
        )
        cuda = self.device.type == "cuda"
        feed = BatchFeed(
            [m.datamodule.train_stream() for m in group], cfg.grad_accum, prefetch=2 if cuda else 0, pin=cuda
        )
        window = _Window(torch.zeros(cfg.log_every, cfg.grad_accum, k, device=self.device), group[0].step)
        first_window = True
        restore_autotuning()  # the kernels are imported by now; the first step need not time them again
        try:
            step = group[0].step
            while step < stop_at:
                self._faults(group, step, stepper)
                ids, labels = feed.next()
                stepper.load(ids, labels)
                stepper.run()
                window.record(step, stepper.losses)
                if self.time_to_first_step is None:  # one host sync in the job's life, as train() measures it
                    if cuda:
                        torch.cuda.synchronize(self.device)
                    self.time_to_first_step = time.perf_counter() - self.started_perf
                step += 1
                for m in group:
                    m.step = step
                    m.batches_seen += cfg.grad_accum
                    m.datamodule.advance(cfg.grad_accum)
                sleep = max((m.cfg.fault_injection.step_sleep_s or 0.0) for m in group)
                if sleep:
                    time.sleep(sleep)
                validates = step % cfg.val_every == 0 or step == cfg.max_steps
                saves = cfg.checkpoint and (step % cfg.ckpt_interval == 0 or step == cfg.max_steps)
                flushes = step % cfg.log_every == 0 or validates or saves or step == stop_at
                if flushes:
                    self._flush(group, window, opt, warm=not first_window, log_row=step % cfg.log_every == 0)
                    first_window = False
                if validates:
                    self._validate(model, group, [m.running for m in group])
                if saves:
                    for i, m in enumerate(group):
                        if m.running:
                            self._save(m, MemberState(flat[i], opt.exp_avg[i], opt.exp_avg_sq[i], m.step), k)
                if validates:
                    self._callbacks(group)
                if step == cfg.max_steps:
                    self._note_step_kind(stepper)  # before the summaries, which say whether it was graphed
                    for m in group:
                        if m.running:
                            m.finish("ok", None, self._extra())
                if any(not m.running for m in group):
                    break
                if flushes:
                    window.restart(step)  # after validation and saving: their time is not training time
        finally:
            feed.close()
            self._note_step_kind(stepper)
            stepper.release()
            keep_autotuning()
        for i, m in enumerate(group):
            if m.running:
                m.state = MemberState(flat[i], opt.exp_avg[i], opt.exp_avg_sq[i], m.step)

    def _faults(self, group: list[MemberRun], step: int, stepper: FusedStep) -> None:
        for i, m in enumerate(group):
            f = m.cfg.fault_injection
            if f.crash_at_step is not None and step >= f.crash_at_step:
                raise InjectedCrash(f"injected crash at step {step} (member {m.index})")
            if f.oom_at_step is not None and step >= f.oom_at_step:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (simulated by fault_injection.oom_at_step at step {step}, member {m.index})"
                )
            if f.nan_at_step is not None and step >= f.nan_at_step and not m.loss_poisoned:
                stepper.loss_scale[i] = float("nan")  # a device write, replayed graphs read it
                m.loss_poisoned = True

    def _flush(
        self, group: list[MemberRun], window: _Window, opt: FusedAdamW, *, warm: bool, log_row: bool
    ) -> None:
        """Read the window's losses back (the only host sync between validations), check each member for divergence,
        log its row, and account the window's time."""
        losses, elapsed, n = window.read()
        lr, norms = opt.last_lr.cpu().tolist(), opt.last_grad_norm.float().cpu().tolist()
        k = len(group)
        for m in group:
            m.train_time += elapsed
            m.tokens_here += n * m.tokens_per_step
            if warm:
                m.warm_time += elapsed
                m.warm_tokens += n * m.tokens_per_step
        if warm:
            self.job_warm_time += elapsed
            self.job_warm_tokens += n * k * group[0].tokens_per_step
        for i, m in enumerate(group):
            if not m.running:
                continue
            try:
                if m.guard is not None:
                    for j in range(n):
                        for a in range(losses.shape[1]):
                            m.guard.check(window.start + j, losses[j, a, i])
            except Diverged as exc:
                m.finish("diverged", exc.reason, self._extra())
                continue
            if log_row and n:
                row = {
                    "epoch": 0,
                    "step": m.step - 1,
                    "train/loss": float(losses[n - 1, -1, i]),
                    "train/lr": lr[i],
                    "train/grad_norm": norms[i],
                    "perf/tokens_per_s": n * m.tokens_per_step / max(elapsed, 1e-9),
                    "perf/step_ms": 1000 * elapsed / n,
                }
                if self.flops_per_token and self.peak_flops and self.device.type == "cuda":
                    row["perf/mfu"] = self.flops_per_token * row["perf/tokens_per_s"] / self.peak_flops
                m.rows.append(row)

    def _validate(self, model: FusedLM, group: list[MemberRun], which: list[bool]) -> None:
        evals = [m.evaluator if w else None for m, w in zip(group, which, strict=True)]
        results = validate(
            model,
            [m.datamodule for m in group],
            evals,
            val_batches=self.cfg.val_batches,
            autocast=self.autocast,
        )
        for m, values in zip(group, results, strict=True):
            if values is not None:
                m.record_val(values)
                m.write_metrics()

    def _save(self, m: MemberRun, state: MemberState, members: int) -> None:
        callbacks = {"DivergenceGuard": m.guard.state_dict()} if m.guard is not None else {}
        payload = member_payload(
            layout=self.layout,
            optimizer=self.ordinary,
            hparams=m.hparams,
            state=state,
            datamodule_state=m.datamodule.state_dict(),
            extras=m.extras(),
            callbacks=callbacks,
            loops=lightning_loops(
                m.step,
                self.cfg.grad_accum,
                len(m.val_history),
                self.val_batches_per_validation,
                m.step >= self.cfg.max_steps,
            ),
            fused={"members": members, "index": m.index},
        )
        write_member(m.ckpt_file, payload)

    def _callbacks(self, group: list[MemberRun]) -> None:
        from archsearch.train.run import is_pruned

        for m in group:
            if not m.running or not m.callbacks or not m.val_history or m.val_history[-1][0] != m.step:
                continue
            trainer, module = MemberTrainer(m), MemberModule(m)
            try:
                for cb in m.callbacks:
                    hook = getattr(cb, "on_validation_end", None)
                    if hook is not None:
                        hook(trainer, module)
            except Exception as exc:  # noqa: BLE001  (one member's callback must not stop the others)
                if is_pruned(exc):
                    m.finish("pruned", str(exc) or "pruned by the sweep", self._extra())
                else:
                    log.warning(
                        "member %d (%s): a callback raised:\n%s", m.index, m.cfg.name, traceback.format_exc()
                    )
                    m.finish("failed", f"{type(exc).__name__}: {exc}", self._extra())
                continue
            if trainer.should_stop:
                m.finish("ok", f"stopped by a callback at step {m.step}", self._extra())


class _Window:
    """Per-step losses on the device between two host reads, and the wall time they took."""

    def __init__(self, buffer: torch.Tensor, start: int):
        self.buffer = buffer
        self.restart(start)

    def restart(self, start: int) -> None:
        self.start, self.n = start, 0
        self.t0 = time.perf_counter()

    def record(self, step: int, losses: torch.Tensor) -> None:
        self.buffer[step - self.start].copy_(losses)
        self.n = step - self.start + 1

    def read(self) -> tuple[torch.Tensor, float, int]:
        """``(losses (n, A, K) on the host, seconds since the window started, n)``; waits for the device."""
        losses = self.buffer[: self.n].cpu()  # synchronises
        return losses, time.perf_counter() - self.t0, self.n
