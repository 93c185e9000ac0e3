"""The command line: ``atman-onnx export`` (needs the export extra), ``atman-onnx explain`` (runtime only) and
``atman-onnx serve`` (needs the serve extra); ``atman-onnx info`` says what this installation has. The flags are
declared here; what each command does with them is in ``atman_onnx.cli.commands``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from atman_onnx.cli.commands import explain_command, export_command, serve_command
from atman_onnx.core.contract import DEFAULT_OPSET
from atman_onnx.core.errors import AtmanError
from atman_onnx.info import add_parser as add_info_parser
from atman_onnx.request import FIELDS
from atman_onnx.runtime.sizing import DEFAULT_MEMORY_BUDGET_MB
from atman_onnx.spec import Field


def _parse_word(field: Field, read: Callable[[str], object]) -> Callable[[str], object]:
    """A flag's word to its field's value (one item of it, for a repeated flag); a bad word is named with the form
    it should have ("argument --span: '0-5' is not START:END")."""

    def parse(word: str) -> object:
        try:
            return read(word)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{word!r} is not {field.kind.metavar or field.kind.what}") from None

    return parse


def _request_options(ex: argparse.ArgumentParser) -> None:
    """One flag per ``ExplainRequest`` field, written from its declaration: the word's type and form, choices,
    repetition, and help (its doc and bounds). A flag not given is left out, so the request's own default
    applies; a boolean field is a switch."""
    for f in FIELDS.values():
        notes = "; ".join(note for note in (f.range(), "repeatable" if f.kind.many else "") if note)
        text = f.doc + (f" ({notes})" if notes else "")
        options: dict[str, Any] = {"dest": f.name, "help": text.replace("%", "%%")}
        options.update({"required": True} if f.required else {"default": argparse.SUPPRESS})
        if f.kind.parse is None:
            options["action"] = "store_true"
        else:
            options.update(
                type=_parse_word(f, f.kind.parse),
                choices=f.choices,
                metavar=f.kind.metavar,
                action="append" if f.kind.many else "store",
            )
        ex.add_argument(f.flag, **options)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="atman-onnx", description="AtMan explanations with ONNX Runtime.")
    commands = root.add_subparsers(dest="command", required=True)

    exp = commands.add_parser("export", help="export a Hugging Face causal LM to an AtMan ONNX graph")
    exp.add_argument("model", help="hub id, local folder, or bundled:smollm2")
    exp.add_argument("out_dir", help="folder to write model.onnx, tokenizer files and atman.json into")
    exp.add_argument("--mode", choices=["log_additive", "multiplicative"], default="log_additive")
    exp.add_argument("--gguf-file", help="GGUF file inside the MODEL folder to de-quantise and export")
    exp.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset (default {DEFAULT_OPSET}: log-additive attention as one fused Attention operator)",
    )
    exp.add_argument(
        "--dtype",
        choices=["fp32", "fp16"],
        default="fp32",
        help="fp16: float16 weights and matmuls; attention scores, softmax and log-probs stay float32",
    )
    exp.add_argument(
        "--quantize",
        choices=["int8", "int8-dynamic"],
        help="int8: weight-only int8 linear layers (MatMulNBits); int8-dynamic: quantize_dynamic",
    )
    exp.add_argument(
        "--verbose",
        action="store_true",
        help="also show what torch, torch.onnx, onnxscript and transformers print, warn and log",
    )
    exp.set_defaults(run=export_command)

    ex = commands.add_parser("explain", help="explain a completion with an exported graph")
    ex.add_argument("dir", help="folder written by `atman-onnx export`")
    _request_options(ex)
    ex.add_argument("--chat", action="store_true", help="take the prompt as a user message in the chat template")
    ex.add_argument("--json", help="write the explanation as JSON to this file")
    ex.add_argument("--html", help="write a self-contained HTML report to this file")
    ex.add_argument(
        "--overlay",
        metavar="PNG",
        help="write each image with its units' relevance drawn over it, and a legend, as PNG: the first "
        "image to this file, the others beside it with -2, -3... before the suffix",
    )
    ex.add_argument(
        "--memory-budget-mb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_MB,
        help="activation memory one graph call may use when choosing the batch size "
        f"(default {DEFAULT_MEMORY_BUDGET_MB})",
    )
    ex.add_argument("--provider", help="cpu or cuda (default: the best that loads)")
    ex.add_argument("--threads", type=int, help="intra-op threads for ONNX Runtime")
    ex.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the perturbations on Ray actors (needs the ray extra): local (a Ray instance here), "
        "auto (this machine's cluster), ray://HOST:PORT or HOST:PORT",
    )
    ex.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="with --ray: actors to split the perturbations over (default: the cluster's CPUs / --threads)",
    )
    ex.add_argument("--quiet", action="store_true", help="no progress bar and no provider line")
    ex.set_defaults(run=explain_command)

    srv = commands.add_parser("serve", help="serve explanations over HTTP (needs the serve extra)")
    srv.add_argument(
        "dirs", nargs="+", metavar="DIR", help="exported folders; each model is named by its folder's name"
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    srv.add_argument("--max-concurrent", type=int, default=1, help="explanations running at once (default 1)")
    srv.add_argument(
        "--max-queued",
        type=int,
        default=8,
        help="explanations waiting for a slot (default 8); beyond them: 503 with Retry-After",
    )
    srv.add_argument("--threads", type=int, help="intra-op threads for each ONNX Runtime session")
    srv.add_argument("--provider", help="cpu or cuda (default: the best that loads)")
    srv.add_argument(
        "--memory-budget-mb",
        type=float,
        default=DEFAULT_MEMORY_BUDGET_MB,
        help=f"activation memory one graph call may use (default {DEFAULT_MEMORY_BUDGET_MB})",
    )
    srv.add_argument(
        "--api-key",
        help="require this key on /v1/* (`Authorization: Bearer KEY`); default: $ATMAN_ONNX_API_KEY, else no key",
    )
    srv.add_argument(
        "--allowed-origins",
        action="append",
        metavar="ORIGINS",
        help="comma-separated origins allowed by CORS (default: none, CORS off)",
    )
    srv.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        help="seconds an explanation may take, queue included, before it is cancelled (default 300)",
    )
    srv.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body (default 1000000)")
    srv.add_argument(
        "--max-input-tokens",
        type=int,
        help="most prompt and target tokens in one request (default: the model's positions)",
    )
    srv.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to drain on SIGTERM before exiting (default 30)"
    )
    srv.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="serve replicas on Ray Serve behind its proxy on --host and --port (needs the ray extra): "
        "local, auto, ray://HOST:PORT or HOST:PORT. Per replica, --max-concurrent requests at once; "
        "--max-queued (at least 1) wait in Ray's proxy",
    )
    srv.add_argument("--replicas", type=int, metavar="N", help="with --ray: replicas, each with all models (default 1)")
    srv.add_argument("--min-replicas", type=int, metavar="N", help="with --ray: autoscale from N replicas (0 allowed)")
    srv.add_argument("--max-replicas", type=int, metavar="N", help="with --ray: autoscale up to N replicas")
    srv.add_argument(
        "--target-ongoing-requests",
        type=float,
        metavar="N",
        help="with autoscaling: requests per replica to scale towards (default --max-concurrent)",
    )
    srv.set_defaults(run=serve_command)
    add_info_parser(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except AtmanError as exc:
        print(f"atman-onnx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atman-onnx: interrupted", file=sys.stderr)
        return 130
    return 0
