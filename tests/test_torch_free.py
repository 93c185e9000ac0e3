"""The runtime never imports torch or transformers, and IO binding runs on whatever provider is used."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

SCRIPT = """
import json, sys
from atman_onnx import Explainer
explanation = Explainer.load(sys.argv[1]).explain("The dog met the fox", " in the garden", conceptual=0.7)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"heavy": heavy, "rows": len(explanation.relevance)}))
"""


def test_runtime_imports_no_torch(tiny_export):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_export("llama", "log_additive"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["rows"] > 0


def test_io_binding_matches_plain_run(tiny_export):
    from atman_onnx.runtime.session import Graph

    graph = Graph(tiny_export("gpt2", "multiplicative"), provider="cpu")
    ids = np.array([[5, 9, 11, 40, 7]] * 2)
    scale = np.array([[1, 1, 0.1, 1, 1], [0.3, 1, 1, 1, 1]], dtype=np.float32)
    pos, lab = np.array([[3, 4]] * 2), np.array([[8, 12]] * 2)
    bound = graph.run(ids, scale, pos, lab, outputs=("label_logprobs", "inputs_embeds"))
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "attention_scale": scale,
        "label_positions": pos,
        "labels": lab,
        **dict(zip(graph.past_names, graph.empty_past())),
        **dict(zip(graph.row_past_names, graph.empty_past(len(ids)))),
    }
    plain = graph.session.run(None, feeds)
    assert np.array_equal(bound["label_logprobs"], plain[0])
    assert np.array_equal(bound["inputs_embeds"], plain[2])
