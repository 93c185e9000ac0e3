"""``GET /``: a page where a person types a prompt (and optionally a target), watches the progress, and reads the
same interactive report ``--html`` writes (``POST /v1/report`` renders it with ``html.render_html``)."""

from __future__ import annotations

import json
from html import escape

from atman_onnx.runtime.groups import GRANULARITIES

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>atman-onnx</title><style>
body{font:16px/1.5 system-ui,sans-serif;color:#222;max-width:60rem;margin:1.5rem auto;padding:0 1rem}
label{display:block;margin:.5rem 0 .2rem;color:#555}textarea,input,select{font:inherit;width:100%;box-sizing:border-box}
textarea{min-height:6rem}button{font:inherit;margin:.8rem 0;padding:.3rem 1rem}progress{width:100%}
#status{color:#555;min-height:1.5em}iframe{width:100%;height:48rem;border:1px solid #ddd;border-radius:4px}
</style></head><body>
<h1>AtMan explanation</h1>
<form id="form">
<label>model</label><select id="model">@MODELS@</select>
<label>prompt</label><textarea id="prompt" required></textarea>
<label>target (empty: the model's own completion)</label><input id="target">
<label>granularity</label><select id="granularity">@GRANULARITIES@</select>
@KEY@<button>Explain</button></form>
<progress id="bar" value="0" max="1" hidden></progress><div id="status" aria-live="polite"></div>
<iframe id="report" title="report" hidden></iframe>
<script>
const $ = id => document.getElementById(id), NEEDS_KEY = @NEEDS_KEY@;
function headers(accept) {
  const h = {"Content-Type": "application/json", "Accept": accept};
  if (NEEDS_KEY) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
async function fail(message) { $("status").textContent = "error: " + message; $("bar").hidden = true; }
async function show(result) {
  const r = await fetch("v1/report", {method: "POST", headers: headers("text/html"), body: JSON.stringify(result)});
  if (!r.ok) return fail((await r.json()).error);
  $("report").srcdoc = await r.text(); $("report").hidden = false;
  $("status").textContent = "done in " + result.timings.total_s.toFixed(2) + " s";
}
$("form").addEventListener("submit", async e => {
  e.preventDefault();
  const body = {model: $("model").value, prompt: $("prompt").value, granularity: $("granularity").value};
  if ($("target").value) body.target = $("target").value;
  $("bar").hidden = false; $("bar").value = 0; $("report").hidden = true; $("status").textContent = "queued";
  const r = await fetch("v1/explain",
                        {method: "POST", headers: headers("text/event-stream"), body: JSON.stringify(body)});
  if (!r.ok) return fail((await r.json()).error);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const lines = buffer.slice(0, cut).split("\\n"); buffer = buffer.slice(cut + 2);
      const event = lines[0].slice(7), data = JSON.parse(lines[1].slice(6));
      if (event === "progress") {
        $("bar").max = data.total; $("bar").value = data.done;
        $("status").textContent = "explaining: " + data.done + " / " + data.total + " perturbations";
      } else if (event === "result") { $("bar").hidden = true; await show(data); }
      else if (event === "error") await fail(data.error);
    }
  }
});
</script></body></html>
"""


def page(models: list[str], needs_key: bool) -> str:
    """The page for these model names; with ``needs_key`` it asks for the API key too."""
    fills = {
        "@MODELS@": _options(models), "@GRANULARITIES@": _options([g for g in GRANULARITIES if g != "spans"]), "@NEEDS_KEY@": json.dumps(needs_key),
        "@KEY@": '<label>API key</label><input id="key" type="password">' if needs_key else "",
    }
    text = PAGE
    for mark, fill in fills.items():
        text = text.replace(mark, fill)
    return text


def _options(names: list[str] | tuple[str, ...]) -> str:
    return "".join(f"<option>{escape(n)}</option>" for n in names)
