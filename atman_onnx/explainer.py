"""The public entry point: load an exported folder and explain what a completion depends on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from atman_onnx.explanation import Explanation, Token, Unit
from atman_onnx.runtime.drive import DEFAULT_MEMORY_BUDGET_MB, SCHEDULES, Work, batch_size_for, label_logprobs
from atman_onnx.runtime.errors import InputError
from atman_onnx.runtime.plan import check_units, plan_factors
from atman_onnx.runtime.score import relevance
from atman_onnx.runtime.session import Graph
from atman_onnx.runtime.text import TextCodec

Prompt = str | list[dict]


def _check_settings(
    factor: float, conceptual: float | None, batch_size: int | None, max_new_tokens: int, schedule: str
) -> None:
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
        raise InputError(f"suppression factor must be a finite number >= 0, got {factor!r}")
    if conceptual is not None and not 0 < conceptual <= 1:
        raise InputError(f"conceptual threshold must lie in (0, 1], got {conceptual!r}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULES)}")


class Explainer:
    """AtMan on an exported graph, through ONNX Runtime only."""

    def __init__(self, graph: Graph, codec: TextCodec, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB):
        self.graph = graph
        self.codec = codec
        self.manifest = graph.manifest
        self.memory_budget_mb = memory_budget_mb

    @classmethod
    def load(cls, folder: str | Path, provider: str | None = None, threads: int | None = None) -> Explainer:
        """Open an exported folder; ``provider`` is 'cuda' or 'cpu' (default: the best that loads)."""
        graph = Graph(folder, provider=provider, threads=threads)
        return cls(graph, TextCodec(folder, graph.manifest.special_tokens))

    @property
    def provider_note(self) -> str:
        return self.graph.provider_note

    def _check_length(self, n_tokens: int) -> None:
        if n_tokens > self.manifest.max_positions:
            raise InputError(
                f"sequence of {n_tokens} tokens is longer than the model's {self.manifest.max_positions} positions"
            )

    def encode_prompt(self, prompt: Prompt) -> tuple[str, list[int], list[tuple[int, int]]]:
        """The prompt as text (chat messages rendered with the model's template), ids and character offsets."""
        if isinstance(prompt, list):
            text, special = self.codec.render_chat(prompt), False
        else:
            text, special = prompt, True
        if not isinstance(text, str) or not text.strip():
            raise InputError("the prompt is empty")
        encoded = self.codec.encode(text, add_special_tokens=special)
        return text, encoded.ids, encoded.offsets

    def generate(self, prompt_ids: list[int], max_new_tokens: int = 32) -> list[int]:
        """Greedy completion with the same graph (unperturbed, reusing its key/value cache), stopping at an
        end-of-sequence token."""
        self._check_length(len(prompt_ids) + max_new_tokens - 1)
        stop = set(self.manifest.special_tokens.get("eos_token_ids", []))
        ids, new, past = list(prompt_ids), list(prompt_ids), None
        for _ in range(max_new_tokens):
            out = self.graph.run(
                np.array([new]), np.ones((1, len(ids)), np.float32), np.array([[len(new) - 1]]),
                np.zeros((1, 1), np.int64), past=past, outputs=("label_logits", *self.graph.present_names),
            )
            token = int(out["label_logits"][0, 0].argmax())
            if token in stop:
                break
            ids.append(token)
            new, past = [token], [out[name] for name in self.graph.present_names]
        return ids[len(prompt_ids) :]

    def explain(
        self,
        prompt: Prompt,
        target: str | None = None,
        *,
        factor: float = 0.1,
        conceptual: float | None = None,
        batch_size: int | None = None,
        max_new_tokens: int = 32,
        schedule: str = "prefix",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Explanation:
        """Explain ``target`` (or the greedy completion, when None) given ``prompt`` (text or chat messages).

        factor: suppression factor s (0.1; below 1 suppresses, above 1 amplifies).
        conceptual: cosine threshold kappa for conceptual suppression (None: off; 0.7 is a fair choice).
        batch_size: perturbations per graph call (default: as many as fit ``memory_budget_mb``).
        schedule: "prefix" (reuse the unperturbed prefix's keys and values) or "naive" (full-length passes).
        on_progress: called with (done, total) perturbations after every batch.
        """
        _check_settings(factor, conceptual, batch_size, max_new_tokens, schedule)
        started = time.perf_counter()
        text, prompt_ids, offsets = self.encode_prompt(prompt)
        if target is None:
            target_ids = self.generate(prompt_ids, max_new_tokens)
            if not target_ids:
                raise InputError("the model generated no target tokens; pass a target")
            target = self.codec.decode(target_ids)
        else:
            if not target:
                raise InputError("the target is empty")
            target_ids = self.codec.encode(target, add_special_tokens=False).ids
            if not target_ids:
                raise InputError("the target is empty after tokenization")
        generated = time.perf_counter()
        fed = prompt_ids + target_ids[:-1]
        self._check_length(len(fed))
        positions = list(range(len(prompt_ids) - 1, len(fed)))
        base = self.graph.run(
            np.array([fed]), np.ones((1, len(fed)), np.float32), np.array([positions]), np.array([target_ids]),
            outputs=("label_logprobs", "inputs_embeds", *self.graph.present_names),
        )
        units = check_units([[j] for j in range(len(fed))], len(fed))
        factors = plan_factors(units, len(fed), factor, conceptual, base["inputs_embeds"][0])
        m = self.manifest
        batch = batch_size or batch_size_for(
            m.dims, m.hidden_size, m.vocab_size, len(fed), len(target_ids), self.memory_budget_mb
        )
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, len(factors))

        work = Work()
        perturbed = label_logprobs(
            self.graph, fed, factors, positions, target_ids, base["label_logprobs"][0],
            [base[name] for name in self.graph.present_names], batch, schedule, progress, work,
        )
        finished = time.perf_counter()
        ends = [len(self.codec.decode(target_ids[: i + 1])) for i in range(len(target_ids))]
        target_offsets = list(zip([0, *ends[:-1]], ends))
        texts = self.codec.token_texts(fed)
        tokens = [Token(texts[i], *offsets[i], "prompt") for i in range(len(prompt_ids))]
        tokens += [Token(texts[len(prompt_ids) + i], *target_offsets[i], "target") for i in range(len(target_ids) - 1)]
        return Explanation(
            prompt=text,
            target=target,
            prompt_ids=prompt_ids,
            target_ids=target_ids,
            tokens=tokens,
            units=[Unit(t.text, t.start, t.end, t.segment, (i,)) for i, t in enumerate(tokens)],
            target_tokens=self.codec.token_texts(target_ids),
            relevance=relevance(base["label_logprobs"][0], perturbed),
            mode=self.manifest.mode,
            suppression_factor=float(factor),
            conceptual_threshold=conceptual,
            model=self.manifest.source,
            provider=self.graph.device,
            timings={
                "generate_s": generated - started,
                "explain_s": finished - generated,
                "total_s": finished - started,
                "passes": len(factors) + 1,
                "batch_size": batch,
                "schedule": schedule,
                "positions_computed": work.positions + len(fed),
            },
        )
