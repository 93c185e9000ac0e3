"""The command line: ``atman-onnx export`` (needs the export extra) and ``atman-onnx explain`` (runtime only)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from atman_onnx.runtime.errors import AtmanError, InputError


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, so a failure never leaves half a file behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _export(args: argparse.Namespace) -> None:
    try:
        from atman_onnx.export.exporter import export
    except ImportError as exc:
        raise AtmanError(f"export needs the export extra (`pip install atman-onnx[export]`): {exc}") from None
    manifest = export(args.model, args.out_dir, mode=args.mode, gguf_file=args.gguf_file, opset=args.opset)
    figures = ", ".join(f"{k} {v:.1e}" for k, v in manifest.validation["max_abs_diff"].items())
    print(f"exported {manifest.architecture} ({manifest.mode}) to {args.out_dir}; validated against PyTorch: {figures}")


def _explain(args: argparse.Namespace) -> None:
    from atman_onnx.explainer import Explainer

    json_path = Path(args.json) if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise InputError(f"cannot write {json_path}: folder {json_path.parent} does not exist")
    explainer = Explainer.load(args.dir, provider=args.provider, threads=args.threads)
    explanation = explainer.explain(
        args.prompt,
        args.target,
        factor=args.factor,
        conceptual=args.conceptual,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        schedule=args.schedule,
    )
    if not args.quiet:
        print(explainer.provider_note, file=sys.stderr)
    print(explanation.to_text(color=sys.stdout.isatty()))
    if json_path is not None:
        _write_atomically(json_path, explanation.to_json() + "\n")
        print(f"wrote {json_path}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="atman-onnx", description="AtMan explanations with ONNX Runtime.")
    commands = root.add_subparsers(dest="command", required=True)

    exp = commands.add_parser("export", help="export a Hugging Face causal LM to an AtMan ONNX graph")
    exp.add_argument("model", help="hub id, local folder, or bundled:smollm2")
    exp.add_argument("out_dir", help="folder to write model.onnx, tokenizer files and atman.json into")
    exp.add_argument("--mode", choices=["log_additive", "multiplicative"], default="log_additive")
    exp.add_argument("--gguf-file", help="GGUF file inside the MODEL folder to de-quantise and export")
    exp.add_argument("--opset", type=int, default=18)
    exp.set_defaults(run=_export)

    ex = commands.add_parser("explain", help="explain a completion with an exported graph")
    ex.add_argument("dir", help="folder written by `atman-onnx export`")
    ex.add_argument("--prompt", required=True)
    ex.add_argument("--target", help="completion to explain (default: the model's greedy completion)")
    ex.add_argument("--json", help="write the explanation as JSON to this file")
    ex.add_argument("--factor", type=float, default=0.1, help="suppression factor (default 0.1)")
    ex.add_argument("--conceptual", type=float, help="cosine threshold for conceptual suppression, e.g. 0.7")
    ex.add_argument("--batch-size", type=int, help="perturbations per graph call (default: fit a 1 GiB budget)")
    ex.add_argument("--schedule", choices=["prefix", "naive"], default="prefix",
                    help="prefix: reuse the unperturbed prefix's keys and values (default); naive: full passes")
    ex.add_argument("--max-new-tokens", type=int, default=32, help="length limit when generating the target")
    ex.add_argument("--provider", help="cpu or cuda (default: the best that loads)")
    ex.add_argument("--threads", type=int, help="intra-op threads for ONNX Runtime")
    ex.add_argument("--quiet", action="store_true", help="print no provider line")
    ex.set_defaults(run=_explain)
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


if __name__ == "__main__":
    sys.exit(main())
