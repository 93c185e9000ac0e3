"""Does the explanation point at the evidence? Evidence retrieval and faithfulness of AtMan against baselines.

Usage: python tools/eval/run.py DIR_LOG_ADDITIVE [DIR_MULTIPLICATIVE] [--limit N] [--json OUT] [--units sentence|token]
       [--methods NAME ...]

Both folders are exports of the shipped model (``atman-onnx export bundled:smollm2 DIR [--mode multiplicative]``).
An item of the bundled QA set (tools/eval/qa_set.json, written by make_set.py) is a prompt (one worked example,
then "Context: ... Question: ... Answer:") and a target, the answer, which the model produces. Every method scores
the item's context for the whole target; the positive is the evidence sentence, the one that holds the answer.

Units (``--units``):
- ``sentence`` (default, a few minutes): AtMan suppresses each context sentence as one unit (the runtime's
  ``granularity="spans"`` with the sentences' character spans). Token-level methods are summed over each
  sentence's tokens. The ranking is of the context's sentences, with the evidence sentence as the one positive.
- ``token`` (about 15x the AtMan passes): AtMan suppresses every token of the context and the question, one per
  pass (``granularity="spans"`` with one span per token, so that the worked example is left out); the ranking is of
  the context's tokens, with the evidence sentence's tokens as positives.

Metrics, per item, then averaged over items (every method sees the same items):
- mAP: average precision of the ranking against the positives (with one positive sentence: reciprocal rank).
- top-1: whether the highest-ranked unit is (in) the evidence sentence.
- deletion AUC: suppress the top k% of the context's tokens (k = 0, 10, ..., 50; at sentence units a token ranks
  with its sentence, ties in text order) and take the mean log-prob of the target's tokens minus the unperturbed
  one; the normalised area under that curve (its mean height, in nats per target token). Lower = faithful: the
  ranking found what the answer depends on sooner.
- insertion AUC: start from all context tokens suppressed and restore the top k% (k = 0, 10, ..., 50); the same
  area of the same difference. Higher = better.
Deletion and insertion apply one perturbation to every method, so that rankings are compared and not
perturbations: the log-additive graph (the runtime's plan and executor, on the unperturbed pass's cached keys and
values) at attention scale 0 (``--deletion-factor``), which takes a token out of every layer's and head's
attention, so no later position can read it.

Methods:
- AtMan in both modes at factors 0.0, 0.1, 0.3, relevance summed over the target tokens;
- AtMan with conceptual suppression at thresholds 0.6, 0.7, 0.8 (``--conceptual-mode``, ``--conceptual-factor``);
- random: uniform scores, averaged over ``--random-seeds`` seeds;
- last-layer attention: the PyTorch model's last-layer attention weights (eager attention), averaged over heads
  and over the positions that predict the target's tokens, to each prompt token;
- gradient x input: the gradient of the target's summed log-prob with respect to the input embeddings, times the
  embeddings, summed over the hidden dimension (signed); and its L2 norm over the hidden dimension (unsigned).
``--methods`` runs only the methods of those names (as the table writes them); the multiplicative folder and the
PyTorch model are loaded only when a chosen method needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import aggregate, average_precision, curve_area, perturbation_rows, random_ap

from atman_onnx.runtime.execute import LocalExecutor, execute, unperturbed
from atman_onnx.runtime.groups import visible_start
from atman_onnx.runtime.plan import make_plan

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
FACTORS = (0.0, 0.1, 0.3)
THRESHOLDS = (0.6, 0.7, 0.8)
DEFAULT_SET = Path(__file__).with_name("qa_set.json")
TORCH_KINDS = ("attention", "grad_x_input", "grad_x_input_norm")


@dataclass
class Method:
    name: str
    kind: str  # atman, random, or one of TORCH_KINDS
    mode: str | None = None
    factor: float | None = None
    conceptual: float | None = None
    seconds: float = 0.0
    per_item: list[dict] = field(default_factory=list)


def method_grid(conceptual_mode: str, conceptual_factor: float, random_seeds: int) -> list[Method]:
    methods = [
        Method(f"AtMan {mode} s={f:g}", "atman", mode, f)
        for mode in ("log_additive", "multiplicative")
        for f in FACTORS
    ]
    methods += [
        Method(
            f"AtMan {conceptual_mode} s={conceptual_factor:g} conceptual {t:g}",
            "atman",
            conceptual_mode,
            conceptual_factor,
            t,
        )
        for t in THRESHOLDS
    ]
    return [
        *methods,
        Method(f"random (mean of {random_seeds} seeds)", "random"),
        Method("last-layer attention", "attention"),
        Method("gradient x input", "grad_x_input"),
        Method("L2 norm of gradient x input", "grad_x_input_norm"),
    ]


def unit_spans(explainer, item: dict, units: str) -> list[tuple[int, int]]:
    """Character spans to explain: the context's sentences, or every token of the context and the question."""
    if units == "sentence":
        return [tuple(s) for s in item["sentence_spans"]]
    offsets = explainer.codec.encode(item["prompt"], add_special_tokens=True).offsets
    positions = sorted({p for s in item["sentence_tokens"] for p in s} | set(item["question_tokens"]))
    return [(visible_start(item["prompt"], *offsets[p]), offsets[p][1]) for p in positions]


def atman_scores(
    explainer, item: dict, spans: list[tuple[int, int]], factor: float, conceptual: float | None
) -> np.ndarray:
    """AtMan relevance of every prompt position for the whole target (a unit's relevance on all its tokens)."""
    e = explainer.explain(
        item["prompt"], item["target"], factor=factor, conceptual=conceptual, granularity="spans", spans=spans
    )
    if e.prompt_ids != item["prompt_ids"] or e.target_ids != item["target_ids"]:
        raise SystemExit(f"{item['id']}: the export's tokenizer disagrees with the QA set; regenerate it")
    scores = np.zeros(len(item["prompt_ids"]))
    for unit, total in zip(e.units, e.total):
        if unit.segment == "prompt":
            scores[list(unit.positions)] = total
    return scores


class TorchBaselines:
    """Last-layer attention and gradient x input on the PyTorch model (needs the export extra)."""

    def __init__(self, model_name: str, threads: int):
        import torch

        from atman_onnx.export import source

        torch.set_num_threads(threads)
        self.torch = torch
        self.model, _ = source.load(model_name)
        self.model.set_attn_implementation("eager")
        self.model.eval()

    def scores(self, item: dict) -> dict[str, np.ndarray]:
        """Per prompt position: last-layer attention, gradient x input (signed sum) and its L2 norm."""
        torch = self.torch
        prompt, target = item["prompt_ids"], item["target_ids"]
        ids = torch.tensor([prompt + target[:-1]])
        at = torch.arange(len(prompt) - 1, ids.shape[1])
        embeds = self.model.get_input_embeddings()(ids).detach().requires_grad_(True)
        out = self.model(inputs_embeds=embeds, output_attentions=True)
        logp = torch.log_softmax(out.logits[0, at].double(), dim=-1)[torch.arange(len(target)), torch.tensor(target)]
        logp.sum().backward()
        grad_x_input = (embeds.grad * embeds).detach()[0, : len(prompt)]
        attention = out.attentions[-1][0].detach().mean(dim=0)[at][:, : len(prompt)].mean(dim=0)
        return {
            "attention": attention.double().numpy(),
            "grad_x_input": grad_x_input.sum(dim=-1).double().numpy(),
            "grad_x_input_norm": grad_x_input.norm(dim=-1).double().numpy(),
        }


class Curves:
    """The target's mean log-prob under rows of attention scales, computed by the runtime's plan and executor on
    the unperturbed pass's cached keys and values (rows are cached by content)."""

    def __init__(self, graph, item: dict, batch_size: int):
        self.graph, self.batch_size = graph, batch_size
        self.shared, _ = unperturbed(graph, item["prompt_ids"] + item["target_ids"][:-1], item["target_ids"])
        self.base = float(self.shared.logprobs.mean())
        self.cache: dict[bytes, float] = {}
        self.rows_run = 0

    def logprobs(self, rows: np.ndarray) -> np.ndarray:
        todo = {row.tobytes(): row for row in rows if row.tobytes() not in self.cache}
        if todo:
            plan = make_plan(self.shared, np.stack(list(todo.values())), self.batch_size)
            means = execute(plan, LocalExecutor(self.graph)).mean(axis=1)
            self.cache.update(zip(todo, means.astype(float)))
            self.rows_run += len(todo)
        return np.array([self.cache[row.tobytes()] for row in rows])

    def areas(self, token_scores: np.ndarray, candidates: np.ndarray, factor: float) -> dict:
        deletion, insertion = perturbation_rows(token_scores, candidates, self.shared.n_fed, FRACTIONS, factor)
        d = self.logprobs(deletion) - self.base
        i = self.logprobs(insertion) - self.base
        return {
            "deletion_auc": curve_area(FRACTIONS, d),
            "insertion_auc": curve_area(FRACTIONS, i),
            "deletion_curve": d.tolist(),
            "insertion_curve": i.tolist(),
        }


def mean_of(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = values.mean(axis=0).tolist() if values.ndim > 1 else float(values.mean())
    return out


def evaluate(item: dict, scores: np.ndarray, units: str, curves: Curves, factor: float) -> dict:
    """The metrics of one ranking (``scores`` per prompt position) of one item."""
    context = np.array(sorted(p for s in item["sentence_tokens"] for p in s))
    if units == "sentence":
        ranked = aggregate(scores, item["sentence_tokens"])
        positives = np.arange(len(ranked)) == item["evidence"]
        token_scores = np.concatenate([np.full(len(s), v) for s, v in zip(item["sentence_tokens"], ranked)])
        order = np.argsort(np.concatenate(item["sentence_tokens"]), kind="stable")
        token_scores = token_scores[order]
    else:
        ranked = token_scores = scores[context]
        positives = np.isin(context, item["evidence_tokens"])
    return {
        "ap": average_precision(ranked, positives),
        "top1": float(positives[int(np.argmax(ranked))]),
        **curves.areas(token_scores, context, factor),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_additive", help="export folder, log_additive mode")
    parser.add_argument("multiplicative", nargs="?", help="export folder, multiplicative mode")
    parser.add_argument("--set", default=str(DEFAULT_SET), help="the QA set (default: the bundled one)")
    parser.add_argument("--limit", type=int, default=8, help="the first N items (default 8; 0 = all)")
    parser.add_argument("--units", choices=("sentence", "token"), default="sentence")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--conceptual-mode", default="log_additive", choices=("log_additive", "multiplicative"))
    parser.add_argument("--conceptual-factor", type=float, default=0.1)
    parser.add_argument("--random-seeds", type=int, default=5)
    parser.add_argument("--deletion-factor", type=float, default=0.0)
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per deletion/insertion graph call")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from atman_onnx import Explainer

    started = time.perf_counter()
    data = json.loads(Path(args.set).read_text())
    if data["format"] == "chat":
        raise SystemExit("this evaluation feeds text prompts; the set was written in the chat format")
    items = data["items"][: args.limit or None]
    methods = method_grid(args.conceptual_mode, args.conceptual_factor, args.random_seeds)
    if args.methods:
        unknown = set(args.methods) - {m.name for m in methods}
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; available: {[m.name for m in methods]}")
        methods = [m for m in methods if m.name in args.methods]
    folders = {"log_additive": args.log_additive, "multiplicative": args.multiplicative}
    explainers = {}
    for mode in {"log_additive"} | {m.mode for m in methods if m.kind == "atman"}:
        if folders[mode] is None:
            raise SystemExit(f"the chosen methods need a {mode} export folder")
        explainers[mode] = Explainer.load(folders[mode], provider="cpu", threads=args.threads)
        if explainers[mode].manifest.mode != mode:
            raise SystemExit(f"{folders[mode]} holds a {explainers[mode].manifest.mode} export, not {mode}")
    wants_torch = any(m.kind in TORCH_KINDS for m in methods)
    baselines = TorchBaselines("bundled:smollm2", args.threads) if wants_torch else None
    chance, rows_run = [], 0
    for n, item in enumerate(items):
        spans = unit_spans(explainers["log_additive"], item, args.units)
        n_units = len(item["sentences"]) if args.units == "sentence" else sum(map(len, item["sentence_tokens"]))
        n_pos = 1 if args.units == "sentence" else len(item["evidence_tokens"])
        chance.append(random_ap(n_units, n_pos))
        curves = Curves(explainers["log_additive"].graph, item, args.batch_size)
        t = time.perf_counter()
        torch_scores = baselines.scores(item) if baselines else {}
        torch_seconds = time.perf_counter() - t
        for method in methods:
            t = time.perf_counter()
            if method.kind == "atman":
                scores = [atman_scores(explainers[method.mode], item, spans, method.factor, method.conceptual)]
            elif method.kind == "random":
                scores = [
                    np.random.default_rng([seed, n]).random(len(item["prompt_ids"]))
                    for seed in range(args.random_seeds)
                ]
            else:
                scores = [torch_scores[method.kind]]
            method.seconds += time.perf_counter() - t + (torch_seconds if method.kind in TORCH_KINDS else 0.0)
            metrics = [evaluate(item, s, args.units, curves, args.deletion_factor) for s in scores]
            method.per_item.append({"id": item["id"], **mean_of(metrics)})
        rows_run += curves.rows_run
        print(f"[{n + 1}/{len(items)}] {item['id']} {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)

    elapsed = time.perf_counter() - started
    results = []
    for method in methods:
        summary = mean_of([{k: v for k, v in r.items() if k != "id"} for r in method.per_item])
        results.append(
            {
                "method": method.name,
                "kind": method.kind,
                "mode": method.mode,
                "factor": method.factor,
                "conceptual": method.conceptual,
                "map": summary["ap"],
                "top1": summary["top1"],
                "deletion_auc": summary["deletion_auc"],
                "insertion_auc": summary["insertion_auc"],
                "deletion_curve": summary["deletion_curve"],
                "insertion_curve": summary["insertion_curve"],
                "seconds_per_item": method.seconds / len(items),
                "per_item": method.per_item,
            }
        )
    prompt_tokens = np.mean([len(i["prompt_ids"]) for i in items])
    print(
        f"{len(items)} items ({args.units} units), {prompt_tokens:.0f} prompt tokens on average; a random ranking's "
        f"expected mAP {np.mean(chance):.3f}; {rows_run} deletion/insertion rows; {elapsed:.0f}s in all\n"
    )
    print(
        "| method | evidence mAP | top-1 in evidence | deletion AUC (lower = better) | insertion AUC (higher = "
        "better) | s/item |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['method']} | {r['map']:.3f} | {r['top1']:.2f} | {r['deletion_auc']:.3f} | "
            f"{r['insertion_auc']:.3f} | {r['seconds_per_item']:.2f} |"
        )
    if args.json:
        out = {
            "command": " ".join(["python", *sys.argv]),
            "set": args.set,
            "items": len(items),
            "units": args.units,
            "fractions": FRACTIONS,
            "deletion_factor": args.deletion_factor,
            "random_seeds": args.random_seeds,
            "expected_random_map": float(np.mean(chance)),
            "seconds": elapsed,
            "threads": args.threads,
            "deletion_rows": rows_run,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
