"""The GPU check (docs/gpu.md): one run of about five minutes on a CUDA machine, everything written under OUT_DIR.

Run it through ``tools/gpu_check.sh ORT_DIR OUT_DIR``, which puts a carried onnxruntime-gpu folder and this checkout
on the path. Steps, in order, each in its own process with its own log (``OUT_DIR/<step>.log``) and result
(``OUT_DIR/<step>.json``), each cut short where the time left (``--budget-s``) runs out, the rest then skipped:

1. ``env``: Python, onnxruntime (file, version, providers), torch, the device's free memory as the planner reads it;
2. ``pytest``: ``pytest -q tests/test_gpu.py`` (relevance on CUDA against the PyTorch reference, fp16, benchmark);
3. ``export``: a random-weight model with SmolLM2-135M's config (and a small trained tokenizer), exported;
4. ``plans``: on that export, token-level explanations of 256 and 1,024 prompt tokens: the device's plan (its
   budget and call cost), the CPU's rule (call cost 0) at the same batch size, naive, and (256) the keys and
   values through the host instead of kept on the device: seconds, graph calls, batch sizes, positions, and the
   largest difference of relevance from the device's plan;
5. ``long-paragraph``, ``long-token``: a 3,000-token explanation at paragraph and at token level;
6. ``bench-256``, ``bench-1024``, ``bench-4096``: ``tools/bench.py DIR --provider cuda --lengths L`` (plain, naive
   and prefix) at the batch size the device's budget gives.

``summary.json`` lists every step's status, seconds and result. ``--provider cpu`` with small ``--lengths``,
``--long-tokens`` and ``--layers`` runs the same steps on a machine without a GPU (a dry run of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# SmolLM2-135M's config (HuggingFaceTB/SmolLM2-135M), weights drawn at random: the shapes, hence the cost, are its.
SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
PARAGRAPHS = [
    (
        "The lighthouse keeper of Varrow Point kept a log of every ship that passed the reef. In the spring of that "
        "year he wrote that the schooner Meridian had anchored in the bay for three days while her crew repaired a "
        "split mast."
    ),
    (
        "Her captain, a tall woman named Ilse Brandt, walked up to the lighthouse each evening to ask about the "
        "weather, and the keeper's daughter, Nora, learned from her the names of the southern stars."
    ),
    (
        "Numbers were her other love: one two three four five six seven eight nine ten, counted on the rail while the "
        "tide came in. Paris is the capital of France. Berlin is the capital of Germany."
    ),
]
TARGET = " The captain of the Meridian was Ilse Brandt, who taught Nora"
TARGET_TOKENS = 8


def log_line(text: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- the steps, each run as ``gpu_check.py --step NAME ...`` in a process of its own ---------------------------


def step_env(args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    out = {
        "python": sys.version,
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "providers": ort.get_available_providers(),
    }
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        out["torch"] = None
    for module in ("pytest", "transformers", "onnx", "tokenizers", "jinja2", "rich", "pynvml"):
        try:
            out[module] = getattr(__import__(module), "__version__", "present")
        except ImportError:
            out[module] = None
    try:
        out["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free,driver_version", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        out["nvidia_smi"] = f"not run: {exc}"
    import atman_onnx.runtime.plan as plan  # this checkout, as the package

    out["atman_onnx_runtime"] = plan.__file__
    return out


def step_export(args: argparse.Namespace) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    source, out = Path(args.out) / "smollm2-random-hf", Path(args.model)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([*PARAGRAPHS, TARGET], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    config = LlamaConfig(**{**SMOLLM2_135M, "num_hidden_layers": args.layers or SMOLLM2_135M["num_hidden_layers"]})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from atman_onnx.cli import main; raise SystemExit(main())",
            "export",
            str(source),
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    print(done.stdout, done.stderr, sep="\n")
    if done.returncode != 0:
        raise SystemExit(f"export failed ({done.returncode})")
    return {
        "folder": str(out),
        "export_s": time.perf_counter() - started,
        "config": {**SMOLLM2_135M, "num_hidden_layers": config.num_hidden_layers},
    }


def open_explainer(args: argparse.Namespace, **graph_options):
    from atman_onnx import Explainer
    from atman_onnx.runtime.session import Graph
    from atman_onnx.runtime.text import TextCodec

    graph = Graph(args.model, provider=args.provider, **graph_options)
    return Explainer(graph, TextCodec(args.model, graph.manifest.special_tokens))


def text_of(explainer, tokens: int, paragraphs: bool = False) -> tuple[str, str]:
    """A prompt of about ``tokens`` tokens (paragraphs apart, blank lines between), and the target."""
    joiner, repeat = ("\n\n" if paragraphs else " "), 1 + tokens // 40
    while True:
        text = joiner.join(PARAGRAPHS * repeat)
        ids = explainer.codec.encode(text, add_special_tokens=False).ids
        if len(ids) >= tokens:
            break
        repeat *= 2
    prompt = explainer.codec.decode(ids[:tokens])
    target = explainer.codec.decode(explainer.codec.encode(TARGET, add_special_tokens=False).ids[:TARGET_TOKENS])
    return prompt, target


def plan_of(explainer, prepared, request, call_cost=None):
    """The plan of one prepared explanation (its unperturbed pass run), as the explainer would make it."""
    ids = list(prepared.target_ids)
    fed = list(prepared.prompt.ids) + ids[:-1]
    return explainer.plan(fed, ids, list(prepared.units), request, call_cost=call_cost)


def timed_plan(explainer, prepared, request, call_cost=None) -> tuple[dict, object]:
    """Plan and execute one prepared explanation; seconds, calls, sizes, and its relevance."""
    from atman_onnx.runtime.execute import LocalExecutor, execute
    from atman_onnx.runtime.plan import graph_calls
    from atman_onnx.runtime.score import relevance

    started = time.perf_counter()
    plan = plan_of(explainer, prepared, request, call_cost)
    planned = time.perf_counter()
    scores = relevance(plan.shared.logprobs, execute(plan, LocalExecutor(explainer.graph)))
    finished = time.perf_counter()
    sizes = [len(b.rows) for b in plan.batches] or [0]
    return {
        "n_fed": plan.shared.n_fed,
        "rows": plan.n_rows,
        "schedule": plan.schedule,
        "batch_size": plan.batch_size,
        "chunk": plan.shared.chunk,
        "graph_calls": graph_calls(plan),
        "batches": len(plan.batches),
        "rows_per_batch": [min(sizes), sum(sizes) / len(sizes), max(sizes)],
        "positions": plan.positions,
        "unperturbed_s": planned - started,
        "batches_s": finished - planned,
        "total_s": finished - started,
    }, scores


def step_plans(args: argparse.Namespace) -> dict:
    import numpy as np

    from atman_onnx import ExplainRequest

    explainer = open_explainer(args)
    graph = explainer.graph
    from atman_onnx.runtime.device import _loaded_cudart_paths

    out = {
        "device": graph.device,
        "resident": graph.resident,
        "free_mb": graph.free_mb,
        "cudart": _loaded_cudart_paths(),
        "lengths": {},
    }
    warm = ExplainRequest(prompt=text_of(explainer, 32)[0], target=text_of(explainer, 32)[1])
    explainer.run(warm)  # the session's first calls (kernels, arena) out of the measurements
    for length in args.lengths:
        prompt, target = text_of(explainer, length)
        request = ExplainRequest(prompt=prompt, target=target)
        prepared = explainer.prepare(request)
        device, want = timed_plan(explainer, prepared, request)
        row = {"device_plan": device}
        log_line(f"{length} tokens, the device's plan: {device}")
        same_batch = ExplainRequest(prompt=prompt, target=target, batch_size=device["batch_size"])
        cpu_rule, got = timed_plan(explainer, prepared, same_batch, call_cost=0)
        row["cpu_rule"] = {**cpu_rule, "max_abs_diff": float(np.abs(got - want).max())}
        log_line(f"{length} tokens, call cost 0: {row['cpu_rule']}")
        naive = ExplainRequest(prompt=prompt, target=target, batch_size=device["batch_size"], schedule="naive")
        naive_row, got = timed_plan(explainer, prepared, naive)
        row["naive"] = {**naive_row, "max_abs_diff": float(np.abs(got - want).max())}
        log_line(f"{length} tokens, naive: {row['naive']}")
        out["lengths"][length] = row
    if graph.resident:  # the same plan with keys and values through the host, per call
        host = open_explainer(args, resident=False)
        host.run(warm)
        prompt, target = text_of(host, args.lengths[0])
        request = ExplainRequest(prompt=prompt, target=target)
        prepared = host.prepare(request)
        row, got = timed_plan(host, prepared, request)
        _, want = timed_plan(explainer, prepared, request)
        out["host_keys_values"] = {**row, "length": args.lengths[0], "max_abs_diff": float(np.abs(got - want).max())}
        log_line(f"{args.lengths[0]} tokens, keys and values through the host: {out['host_keys_values']}")
    return out


def step_long(args: argparse.Namespace, granularity: str) -> dict:
    from atman_onnx import ExplainRequest

    explainer = open_explainer(args)
    prompt, target = text_of(explainer, 32)
    explainer.run(ExplainRequest(prompt=prompt, target=target))  # warm up
    prompt, target = text_of(explainer, args.long_tokens, paragraphs=True)
    result = explainer.run(ExplainRequest(prompt=prompt, target=target, granularity=granularity))
    return {
        "granularity": granularity,
        "prompt_tokens": len(result.prompt_ids),
        "units": len(result.units),
        "free_mb": explainer.graph.free_mb,
        "timings": result.timings,
    }


def step_bench(args: argparse.Namespace, length: int) -> dict:
    from atman_onnx import ExplainRequest

    explainer = open_explainer(args)
    prompt, target = text_of(explainer, length)
    request = ExplainRequest(prompt=prompt, target=target)
    batch = plan_of(explainer, explainer.prepare(request), request).batch_size  # the device's budget's choice
    del explainer  # its device memory back before bench's processes start
    report = Path(args.out) / f"bench-{length}.json"
    command = [
        sys.executable,
        str(ROOT / "tools" / "bench.py"),
        args.model,
        "--provider",
        args.provider,
        "--lengths",
        str(length),
        "--target-tokens",
        str(TARGET_TOKENS),
        "--repeats",
        str(args.repeats),
        "--batch-size",
        str(batch),
        "--json",
        str(report),
    ]
    print(" ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"bench.py failed ({done.returncode})")
    return {"batch_size": batch, **json.loads(report.read_text())}


def run_step(args: argparse.Namespace) -> None:
    name = args.step
    if name == "env":
        result = step_env(args)
    elif name == "export":
        result = step_export(args)
    elif name == "plans":
        result = step_plans(args)
    elif name.startswith("long-"):
        result = step_long(args, name.removeprefix("long-"))
    elif name.startswith("bench-"):
        result = step_bench(args, int(name.removeprefix("bench-")))
    else:
        raise SystemExit(f"unknown step {name!r}")
    (Path(args.out) / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


# ---- the check: the steps in order, within the time budget ---------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for the logs and results")
    parser.add_argument("--provider", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--budget-s", type=float, default=290, help="seconds for the whole check (default 290)")
    parser.add_argument("--model", help="an exported folder to use (default: export one into OUT/smollm2-random)")
    parser.add_argument("--layers", type=int, help="layers of the random model (default SmolLM2-135M's 30)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024], help="prompt tokens of 'plans'")
    parser.add_argument("--long-tokens", type=int, default=3000, help="prompt tokens of the long explanations")
    parser.add_argument("--bench-lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=2, help="bench.py's repeats")
    parser.add_argument("--skip", nargs="*", default=[], help="steps not to run")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    if args.step:
        args.model = args.model or str(out / "smollm2-random")
        run_step(args)
        return
    deadline = time.monotonic() + args.budget_s
    exported = args.model is None
    args.model = args.model or str(out / "smollm2-random")
    # (step, the most seconds it may take); bench at 4096 runs naive over 16.8M positions: it gets what is left
    steps = [
        ("env", 60),
        ("pytest", 150),
        *([("export", 180)] if exported else []),
        ("plans", 120),
        ("long-paragraph", 90),
        ("long-token", 150),
        *((f"bench-{n}", 600) for n in args.bench_lengths),
    ]
    summary = {"provider": args.provider, "budget_s": args.budget_s, "model": args.model, "steps": []}
    for name, most in steps:
        left = deadline - time.monotonic()
        entry = {"step": name}
        if name in args.skip:
            entry["status"] = "skipped (asked)"
        elif left < 15:
            entry["status"] = "skipped (no time left)"
        elif name not in ("env", "pytest", "export") and not (Path(args.model) / "atman.json").exists():
            entry["status"] = "skipped (no exported model)"
        else:
            if name == "pytest":
                command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
            else:
                command = [
                    sys.executable,
                    __file__,
                    args.out,
                    "--step",
                    name,
                    "--provider",
                    args.provider,
                    "--model",
                    args.model,
                    "--lengths",
                    *map(str, args.lengths),
                    "--long-tokens",
                    str(args.long_tokens),
                    "--repeats",
                    str(args.repeats),
                    *(["--layers", str(args.layers)] if args.layers else []),
                ]
            timeout = min(most, left)
            log_line(f"{name}: up to {timeout:.0f} s")
            started = time.monotonic()
            with open(out / f"{name}.log", "w") as handle:
                try:
                    code = subprocess.run(
                        command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout
                    ).returncode
                    entry["status"] = "passed" if code == 0 else f"failed (exit {code})"
                except subprocess.TimeoutExpired:
                    entry["status"] = f"timed out after {timeout:.0f} s"
            entry["seconds"] = round(time.monotonic() - started, 1)
            result = out / f"{name}.json"
            if result.exists():
                entry["result"] = json.loads(result.read_text())
            tail = (out / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
            entry["log_tail"] = tail
        log_line(f"{name}: {entry['status']}" + (f" ({entry['seconds']} s)" if "seconds" in entry else ""))
        summary["steps"].append(entry)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps([{k: v for k, v in e.items() if k != "result"} for e in summary["steps"]], indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
