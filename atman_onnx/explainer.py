"""The public entry point: load an exported folder and explain what a completion depends on.

``Explainer`` only orchestrates: prepare the request (encode its texts, make its units, count its work: no graph
call), run the unperturbed pass and plan the perturbations, execute the plan, score, and pack an ``Explanation``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atman_onnx.core.errors import InputError
from atman_onnx.explanation import Explanation
from atman_onnx.prepare import Prepared, planned_work, request_units
from atman_onnx.request import ExplainRequest
from atman_onnx.runtime.encode import Prompt, encode_prompt, encode_target
from atman_onnx.runtime.execute import Executor, LocalExecutor, Stop, unperturbed
from atman_onnx.runtime.generate import generate
from atman_onnx.runtime.groups import token_columns
from atman_onnx.runtime.plan import Plan
from atman_onnx.runtime.search import Level, Rule, cover_warnings, search
from atman_onnx.runtime.session import Graph
from atman_onnx.runtime.sizing import DEFAULT_MEMORY_BUDGET_MB, Sizing, size_calls
from atman_onnx.runtime.text import TextCodec
from atman_onnx.runtime.units import Unit
from atman_onnx.runtime.vision import NO_IMAGES, VisionEncoder
from atman_onnx.scoring import Base, Scorer, plan_units


class Explainer:
    """AtMan on an exported graph, through ONNX Runtime only; ``executor`` runs the perturbation batches
    (default: in this process, on ``graph``)."""

    def __init__(
        self,
        graph: Graph,
        codec: TextCodec,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        executor: Executor | None = None,
        vision: VisionEncoder | None = None,
    ):
        self.graph = graph
        self.codec = codec
        self.manifest = graph.manifest
        self.memory_budget_mb = memory_budget_mb
        self.executor = executor or LocalExecutor(graph)
        self.vision = vision

    @classmethod
    def load(
        cls,
        folder: str | Path,
        provider: str | None = None,
        threads: int | None = None,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        executor: Executor | None = None,
    ) -> Explainer:
        """Open an exported folder; ``provider`` is 'cuda' or 'cpu' (default: the best that loads).

        ``memory_budget_mb`` bounds one graph call's activations when the batch size is chosen automatically.
        ``executor`` runs the perturbation batches (default: a ``LocalExecutor``, in this process), e.g. a
        ``cluster.executor.RayExecutor`` on Ray actors; the explainer takes it over: ``close`` closes it.
        """
        if not (math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
            raise InputError(f"memory budget must be a positive number of MB, got {memory_budget_mb}")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        graph = Graph(folder, provider=provider, threads=threads)
        vision = VisionEncoder(folder, graph.manifest, provider, threads) if graph.manifest.takes_embeds else None
        return cls(graph, TextCodec(folder, graph.manifest.special_tokens), memory_budget_mb, executor, vision)

    def close(self) -> None:
        """Give back what the executor holds: a Ray executor's actors and their CPUs (a local one holds nothing).
        ``with Explainer.load(...) as explainer:`` closes it on leaving."""
        close = getattr(self.executor, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def provider_note(self) -> str:
        return self.graph.provider_note

    def _check_length(self, n_tokens: int) -> None:
        if n_tokens > self.manifest.max_positions:
            raise InputError(
                f"sequence of {n_tokens} tokens is longer than the model's {self.manifest.max_positions} positions"
            )

    def _generate(self, prompt: np.ndarray, max_new_tokens: int, stop: Stop | None = None) -> tuple[str, list[int]]:
        """The text and ids of the model's greedy completion of the fed ``prompt`` (ids or input embeddings)."""
        self._check_length(len(prompt) + max_new_tokens - 1)
        ids = generate(self.graph, prompt, max_new_tokens, self.manifest.stop_ids, stop)
        if not ids:
            raise InputError("the model generated no target tokens; pass a target")
        return self.codec.decode(ids), ids

    def plan(
        self,
        fed: np.ndarray | list[int],
        labels: list[int],
        units: list[Unit],
        request: ExplainRequest,
        stop: Stop | None = None,
        call_cost: float | None = None,
    ) -> Plan:
        """The unperturbed pass over ``fed`` (token ids, or input embeddings) and the batches that suppress each
        unit in turn, sized for the graph's device (``size_calls``). ``call_cost``: the token positions one graph
        call is worth to the prefix schedule (default: the device's, 0 on CPU, ``GPU_CALL_COST`` on CUDA)."""
        return plan_units(self._base(fed, labels, request, stop), units, request, call_cost)

    def _base(self, fed: np.ndarray | list[int], labels: list[int], request: ExplainRequest, stop: Stop | None) -> Base:
        """The unperturbed pass over ``fed`` scoring ``labels``, in the query chunks its sizing chose."""
        self._check_length(len(fed))
        sizing = self._sizing(len(fed), len(labels), request)
        shared, embeddings = unperturbed(self.graph, fed, labels, stop, sizing.chunk)
        return Base(shared, embeddings, sizing)

    def _sizing(self, n_fed: int, n_labels: int, request: ExplainRequest) -> Sizing:
        """Query chunks and rows per graph call: the request's, else what fits the memory budget (on CUDA: the
        device's free memory, unless another budget than the default was given)."""
        m, graph = self.manifest, self.graph
        return size_calls(
            m.dims,
            m.hidden_size,
            m.vocab_size,
            n_fed,
            n_labels,
            m.row_cache,
            graph.device,
            self.memory_budget_mb,
            graph.free_mb,
            request.chunk_size,
            request.batch_size,
        )

    def explain(
        self,
        prompt: Prompt,
        target: str | None = None,
        *,
        on_progress: Callable[[int, int], None] | None = None,
        stop: Stop | None = None,
        images: Sequence[Any] = (),
        **options: Any,
    ) -> Explanation:
        """Explain ``target`` (or the greedy completion, when None) given ``prompt`` (text or chat messages).

        ``options`` are the fields of ``ExplainRequest``: factor, conceptual, granularity, spans, delimiter,
        include_template, contrast, max_new_tokens, batch_size, schedule. ``on_progress(done, total)`` is called
        with the perturbations done after every batch; setting ``stop`` (a ``Stop``) from another thread ends the
        explanation within one graph call (a generation step, an unperturbed pass or a batch). ``images`` (file
        paths, bytes or PIL images) go with an image-text model's prompt, one per ``<image>`` marker.
        """
        request = ExplainRequest.from_dict({"prompt": prompt, "target": target, **options})
        if not isinstance(images, (list, tuple)) or images:  # paths, bytes or PIL images (JSON: base64 strings)
            # checked there (a lone path is refused) and read into bytes by __post_init__, hence the wider type
            request = dataclasses.replace(request, images=images)  # type: ignore[arg-type]
        return self.run(request, on_progress, stop)

    def _fed(self, prompt: np.ndarray, ids: list[int]) -> np.ndarray:
        """The fed sequence: the prompt (ids or input embeddings) followed by ``ids``, in the prompt's form."""
        if prompt.ndim == 1:
            return np.concatenate([prompt, np.asarray(ids, dtype=prompt.dtype)])
        return np.concatenate([prompt, self.graph.embed(ids)])

    def prepare(self, request: ExplainRequest) -> Prepared:
        """Do once, without a graph call, what ``run`` needs first: the prompt as fed (an image-text model's images
        preprocessed, their tokens in place of the markers), the completions' ids, the units, and the counts a
        service sizes and admits on (tokens, passes, positions), and the estimated peak memory."""
        prompt, images = request.prompt, None
        if request.images:
            if self.vision is None:
                raise InputError(NO_IMAGES)
            try:
                prompt, images = self.vision.prepare(prompt, request.images)
            except InputError as exc:
                raise InputError(f"field 'images': {exc}") from None
        encoded = encode_prompt(self.codec, prompt, request.document_texts)
        target_ids = None if request.target is None else tuple(encode_target(self.codec, request.target))
        contrast_ids = None if request.contrast is None else tuple(encode_target(self.codec, request.contrast))
        longest = max(request.max_new_tokens if target_ids is None else len(target_ids), len(contrast_ids or ()))
        n_tokens = len(encoded.ids) + longest
        tokens = levels = passes = positions = memory = None
        if target_ids is not None and n_tokens - 1 <= self.manifest.max_positions:  # else run refuses it
            assert request.target is not None  # target_ids were encoded from it
            tokens, levels = request_units(
                self.codec, self.vision, encoded, request.target, target_ids, images, request
            )
            completions = [target_ids] + ([contrast_ids] if contrast_ids is not None else [])
            if len(levels) == 1:  # else later levels depend on the scores
                passes = (len(levels[0]) + 1) * len(completions)
            if request.conceptual is None and len(levels) == 1:  # else the rows depend on the embeddings
                sizing_for = functools.partial(self._sizing, request=request)
                positions, memory = planned_work(
                    levels[0], len(encoded.ids), completions, request, sizing_for, self.manifest
                )
        return Prepared(
            request, encoded, images, target_ids, contrast_ids, tokens, levels, n_tokens, passes, positions, memory
        )

    def run(
        self,
        request: ExplainRequest | Prepared,
        on_progress: Callable[[int, int], None] | None = None,
        stop: Stop | None = None,
        on_level: Callable[[Level], None] | None = None,
    ) -> Explanation:
        """Explain one request (see ``explain``), or one that this explainer's ``prepare`` made (a request is
        prepared first). Setting ``stop`` from another thread ends it within one graph call, with ``Stopped``;
        ``on_level`` gets each level of a search over levels once it is scored."""
        started = time.perf_counter()
        prepared = request if isinstance(request, Prepared) else self.prepare(request)
        request, encoded = prepared.request, prepared.prompt
        fed_prompt = np.asarray(encoded.ids)
        if prepared.images is not None:
            assert self.vision is not None  # prepare preprocessed the images with it
            fed_prompt = self.vision.embed(self.graph, encoded.ids, prepared.images)
        target_ids: Sequence[int] | None  # given (a tuple, encoded by prepare) or generated (a list)
        target, target_ids = request.target, prepared.target_ids
        if target is None or target_ids is None:  # prepare encodes a given target: both are None or neither
            target, target_ids = self._generate(fed_prompt, request.max_new_tokens, stop)
        contrast_ids = None if prepared.contrast_ids is None else list(prepared.contrast_ids)
        completions = [list(target_ids)] + ([contrast_ids] if contrast_ids is not None else [])
        generated = time.perf_counter()
        tokens, levels = prepared.tokens, prepared.levels
        if tokens is None or levels is None:  # a generated target, or a sequence the model cannot take (refused first)
            for ids in completions:
                self._check_length(len(encoded.ids) + len(ids) - 1)
            tokens, levels = request_units(
                self.codec, self.vision, encoded, target, target_ids, prepared.images, request
            )
        bases = [self._base(self._fed(fed_prompt, ids[:-1]), ids, request, stop) for ids in completions]
        scorer = Scorer(bases, request, self.executor, on_progress, stop)  # one unperturbed pass per completion
        target_tokens = self.codec.token_texts(completions[0])
        columns = None  # groups of target tokens, one per column (token columns: None)
        if contrast_ids is None and request.target_granularity != "token":  # a column sums its tokens' log-probs
            columns = token_columns(target_tokens, request.target_granularity)
        follow = tuple(columns) if columns is not None and request.target_granularity == "sentence" else None
        rule = Rule(request.refine_top_k, request.refine_mass, request.max_passes, request.group_level, follow)

        stream = on_level if len(levels) > 1 else None  # each level as the result will hold it
        report = None if stream is None else (lambda level: stream(level.in_columns(columns)))
        named = list(zip(request.levels, levels))
        searched = search(encoded.text, named, rule, scorer, len(completions), scorer.expect, report)
        searched = [level.in_columns(columns) for level in searched]
        plans = scorer.plans
        if contrast_ids is not None:
            target_tokens = [f"{target} (vs {request.contrast})"]
        elif columns is not None:
            target_tokens = ["".join(target_tokens[t] for t in column) for column in columns]
        finest = searched[-1]
        finished = time.perf_counter()
        return Explanation(
            prompt=encoded.text,
            target=target,
            prompt_ids=encoded.ids,
            target_ids=completions[0],
            tokens=list(tokens),
            units=list(finest.units),
            target_tokens=target_tokens,
            relevance=finest.relevance,
            mode=self.manifest.mode,
            suppression_factor=float(request.factor),
            conceptual_threshold=request.conceptual,
            granularity=finest.granularity,
            target_granularity=request.target_granularity,
            contrast=request.contrast,
            contrast_ids=contrast_ids,
            model=self.manifest.source,
            provider=self.graph.device,
            images=request.images,
            timings={
                "generate_s": generated - started,
                "explain_s": finished - generated,
                "total_s": finished - started,
                "passes": sum(p.n_rows for p in plans) + len(bases),  # one unperturbed pass per completion
                "batch_size": plans[-1].batch_size,
                "schedule": request.schedule,
                "positions_computed": sum(p.positions - p.shared.n_fed for p in plans)
                + sum(b.shared.n_fed for b in bases),
                "chunk_size": plans[-1].shared.chunk,
            },
            levels=tuple(searched) if len(searched) > 1 else (),
            warnings=cover_warnings(searched, len(encoded.ids), self.manifest.mode),
        )
