"""The public entry point: load an exported folder and explain what a completion depends on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atman_onnx.explanation import Explanation, Token, Unit
from atman_onnx.runtime.drive import DEFAULT_MEMORY_BUDGET_MB, SCHEDULES, Work, batch_size_for, label_logprobs
from atman_onnx.runtime.errors import InputError
from atman_onnx.runtime.groups import GRANULARITIES, text_spans, token_groups
from atman_onnx.runtime.plan import DEFAULT_FACTOR, check_units, plan_factors
from atman_onnx.runtime.score import relevance
from atman_onnx.runtime.session import Graph
from atman_onnx.runtime.text import TextCodec

Prompt = str | list[dict]


def _check_settings(
    factor: float, conceptual: float | None, batch_size: int | None, max_new_tokens: int, schedule: str,
    granularity: str,
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
    if granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity {granularity!r}; available: {', '.join(GRANULARITIES)}")


@dataclass(frozen=True)
class EncodedPrompt:
    """The prompt as fed: its text, ids, character offsets, and the character ranges worth explaining."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    content: list[tuple[int, int]] | None  # None: all of it; for chat prompts, the messages' contents


class Explainer:
    """AtMan on an exported graph, through ONNX Runtime only."""

    def __init__(self, graph: Graph, codec: TextCodec, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB):
        self.graph = graph
        self.codec = codec
        self.manifest = graph.manifest
        self.memory_budget_mb = memory_budget_mb

    @classmethod
    def load(
        cls, folder: str | Path, provider: str | None = None, threads: int | None = None,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    ) -> Explainer:
        """Open an exported folder; ``provider`` is 'cuda' or 'cpu' (default: the best that loads).

        ``memory_budget_mb`` bounds one graph call's activations when the batch size is chosen automatically.
        """
        if memory_budget_mb <= 0:
            raise InputError(f"memory budget must be positive, got {memory_budget_mb}")
        graph = Graph(folder, provider=provider, threads=threads)
        return cls(graph, TextCodec(folder, graph.manifest.special_tokens), memory_budget_mb)

    @property
    def provider_note(self) -> str:
        return self.graph.provider_note

    def _check_length(self, n_tokens: int) -> None:
        if n_tokens > self.manifest.max_positions:
            raise InputError(
                f"sequence of {n_tokens} tokens is longer than the model's {self.manifest.max_positions} positions"
            )

    def encode_prompt(self, prompt: Prompt) -> EncodedPrompt:
        """Tokenize a text prompt, or render chat messages with the model's template and find their contents."""
        if isinstance(prompt, list):
            if not any(str(m.get("content", "")).strip() for m in prompt):
                raise InputError("the prompt is empty")
            text = self.codec.render_chat(prompt)
            content, cursor = [], 0
            for message in prompt:
                body = str(message.get("content", ""))
                at = text.find(body, cursor) if body else -1
                if at >= 0:
                    content.append((at, at + len(body)))
                    cursor = at + len(body)
            encoded = self.codec.encode(text, add_special_tokens=False)
        else:
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError("the prompt is empty")
            text, content = prompt, None
            encoded = self.codec.encode(text, add_special_tokens=True)
        return EncodedPrompt(text, encoded.ids, encoded.offsets, content)

    def encode_target(self, target: str | None, prompt_ids: list[int], max_new_tokens: int) -> tuple[str, list[int]]:
        """The target's text and ids: as given, or the model's greedy completion when None."""
        if target is None:
            ids = self.generate(prompt_ids, max_new_tokens)
            if not ids:
                raise InputError("the model generated no target tokens; pass a target")
            return self.codec.decode(ids), ids
        if not target:
            raise InputError("the target is empty")
        ids = self.codec.encode(target, add_special_tokens=False).ids
        if not ids:
            raise InputError("the target is empty after tokenization")
        return target, ids

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

    def fed_tokens(self, prompt: EncodedPrompt, target_ids: list[int]) -> list[Token]:
        """Every fed position (prompt, then target without its last token) with its text and character span."""
        texts = self.codec.token_texts(prompt.ids + target_ids[:-1])
        ends = [len(self.codec.decode(target_ids[: i + 1])) for i in range(len(target_ids) - 1)]
        target_spans = list(zip([0, *ends[:-1]], ends))
        tokens = [Token(texts[i], *prompt.offsets[i], "prompt") for i in range(len(prompt.ids))]
        return tokens + [Token(texts[len(prompt.ids) + i], *span, "target") for i, span in enumerate(target_spans)]

    def make_units(
        self, prompt: EncodedPrompt, tokens: list[Token], target: str, granularity: str,
        spans: list[tuple[int, int]] | None, delimiter: str | None, include_template: bool, with_target: bool,
    ) -> list[Unit]:
        """The units to suppress: prompt groups (chat: message contents only, unless ``include_template``),
        then, when ``with_target``, the fed target tokens grouped alike."""
        content = None if include_template else prompt.content
        n_prompt = len(prompt.ids)
        segments = [("prompt", prompt.text, range(n_prompt), content)]
        if with_target:  # only the fed part of the target (all but its last token) can be suppressed
            fed_target = target[: tokens[-1].end] if len(tokens) > n_prompt else ""
            segments.append(("target", fed_target, range(n_prompt, len(tokens)), None))
        units = []
        for segment, text, positions, within in segments:
            if granularity == "token" or (granularity == "spans" and segment == "target"):
                for p in positions:
                    start, end = tokens[p].start, tokens[p].end
                    inside = within is None or any(lo < end and start < hi for lo, hi in within)
                    if inside:
                        units.append(Unit(tokens[p].text, start, end, segment, (p,)))
                continue
            offsets = [(tokens[p].start, tokens[p].end) for p in positions]
            for group in token_groups(offsets, text, text_spans(text, granularity, spans, delimiter, within)):
                members = tuple(positions[i] for i in group.positions)
                units.append(Unit(text[group.start : group.end], group.start, group.end, segment, members))
        if not units:
            raise InputError(f"nothing to explain: no {granularity} units in the prompt")
        return units

    def _relevance(
        self, fed: list[int], target_ids: list[int], units: list[Unit], factor: float, conceptual: float | None,
        batch_size: int | None, schedule: str, progress: Callable[[int], None], work: Work,
    ) -> np.ndarray:
        """AtMan relevance [units, target tokens] for one fed sequence."""
        self._check_length(len(fed))
        positions = list(range(len(fed) - len(target_ids), len(fed)))
        base = self.graph.run(
            np.array([fed]), np.ones((1, len(fed)), np.float32), np.array([positions]), np.array([target_ids]),
            outputs=("label_logprobs", "inputs_embeds", *self.graph.present_names),
        )
        groups = check_units([list(u.positions) for u in units], len(fed))
        factors = plan_factors(groups, len(fed), factor, conceptual, base["inputs_embeds"][0])
        m = self.manifest
        batch = batch_size or batch_size_for(
            m.dims, m.hidden_size, m.vocab_size, len(fed), len(target_ids), self.memory_budget_mb
        )
        work.positions += len(fed)
        perturbed = label_logprobs(
            self.graph, fed, factors, positions, target_ids, base["label_logprobs"][0],
            [base[name] for name in self.graph.present_names], batch, schedule, progress, work,
        )
        work.batch_size = batch
        return relevance(base["label_logprobs"][0], perturbed)

    def explain(
        self,
        prompt: Prompt,
        target: str | None = None,
        *,
        factor: float = DEFAULT_FACTOR,
        conceptual: float | None = None,
        granularity: str = "token",
        spans: list[tuple[int, int]] | None = None,
        delimiter: str | None = None,
        include_template: bool = False,
        contrast: str | None = None,
        batch_size: int | None = None,
        max_new_tokens: int = 32,
        schedule: str = "prefix",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Explanation:
        """Explain ``target`` (or the greedy completion, when None) given ``prompt`` (text or chat messages).

        factor: suppression factor s (default 0.0, which in log_additive mode takes the unit out of attention;
            below 1 suppresses, above 1 amplifies).
        conceptual: cosine threshold kappa for conceptual suppression (None: off; 0.7 is a fair choice).
        granularity: "token", "word", "sentence", "paragraph", or "spans" (character ``spans`` or a
            ``delimiter``); each unit is suppressed in one pass and gets one row of relevance.
        include_template: for chat prompts, explain the template's tokens too (default: message contents only).
        contrast: explain why the model says ``target`` rather than ``contrast``: one column of relevance on
            log p(target) - log p(contrast), over the prompt's units.
        batch_size: perturbations per graph call (default: as many as fit ``memory_budget_mb``).
        schedule: "prefix" (reuse the unperturbed prefix's keys and values) or "naive" (full-length passes).
        on_progress: called with (done, total) perturbations after every batch.
        """
        _check_settings(factor, conceptual, batch_size, max_new_tokens, schedule, granularity)
        started = time.perf_counter()
        encoded = self.encode_prompt(prompt)
        target, target_ids = self.encode_target(target, encoded.ids, max_new_tokens)
        contrast_ids = self.encode_target(contrast, encoded.ids, max_new_tokens)[1] if contrast is not None else None
        generated = time.perf_counter()
        tokens = self.fed_tokens(encoded, target_ids)
        units = self.make_units(
            encoded, tokens, target, granularity, spans, delimiter, include_template, with_target=contrast is None
        )
        total = len(units) * (1 if contrast is None else 2)
        done, work = 0, Work()

        def progress(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, total)

        run = dict(factor=factor, conceptual=conceptual, batch_size=batch_size, schedule=schedule,
                   progress=progress, work=work)
        scores = self._relevance(encoded.ids + target_ids[:-1], target_ids, units, **run)
        target_tokens = self.codec.token_texts(target_ids)
        if contrast_ids is not None:
            against = self._relevance(encoded.ids + contrast_ids[:-1], contrast_ids, units, **run)
            scores = (scores.sum(axis=1) - against.sum(axis=1))[:, None]
            target_tokens = [f"{target} (vs {contrast})"]
        finished = time.perf_counter()
        return Explanation(
            prompt=encoded.text,
            target=target,
            prompt_ids=encoded.ids,
            target_ids=target_ids,
            tokens=tokens,
            units=units,
            target_tokens=target_tokens,
            relevance=scores,
            mode=self.manifest.mode,
            suppression_factor=float(factor),
            conceptual_threshold=conceptual,
            granularity=granularity,
            contrast=contrast,
            contrast_ids=contrast_ids,
            model=self.manifest.source,
            provider=self.graph.device,
            timings={
                "generate_s": generated - started,
                "explain_s": finished - generated,
                "total_s": finished - started,
                "passes": total + (1 if contrast is None else 2),
                "batch_size": work.batch_size,
                "schedule": schedule,
                "positions_computed": work.positions,
            },
        )
