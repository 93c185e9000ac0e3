// The demo page: load a folder by URL, explain the prompt's units for the target, and colour each unit as its
// batch finishes.
import * as ort from "onnxruntime-web";

import { Explainer } from "../dist/src/index.js";

ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page
ort.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;

const $ = (id) => document.getElementById(id);
const loaded = new Map(); // backend and folder URL -> Promise<Explainer>
let controller = null;

function load(folder, backend) {
  const key = `${backend} ${folder}`;
  if (!loaded.has(key)) {
    const explainer = Explainer.load(new URL(folder, document.baseURI), {
      ort,
      sessionOptions: { executionProviders: [backend] },
    });
    explainer.catch(() => loaded.delete(key));
    loaded.set(key, explainer);
  }
  return loaded.get(key);
}

/** Red for positive relevance, blue for negative, by its share of the largest magnitude so far. */
function colour(value, scale) {
  const alpha = scale > 0 ? Math.min(1, Math.abs(value) / scale) : 0;
  return value >= 0 ? `rgba(220, 40, 40, ${alpha})` : `rgba(40, 90, 220, ${alpha})`;
}

/** The prompt's text with every scored unit (in prompt order) coloured by its total relevance (summed over the
 * target); spans count code points. */
function draw(prompt, units, totals) {
  const chars = Array.from(prompt);
  const text = (start, end) => chars.slice(start, end).join("");
  const heatmap = $("heatmap");
  heatmap.replaceChildren();
  const scale = Math.max(0, ...totals.map(Math.abs));
  let at = 0;
  units.forEach((unit, i) => {
    if (unit.segment !== "prompt") return;
    heatmap.append(text(at, unit.start));
    const span = document.createElement("span");
    span.className = "unit";
    span.textContent = text(unit.start, unit.end);
    span.style.background = colour(totals[i], scale);
    span.title = `${unit.text}: ${totals[i].toFixed(4)}`;
    heatmap.append(span);
    at = unit.end;
  });
  heatmap.append(text(at, chars.length));
}

async function explain(event) {
  event.preventDefault();
  controller = new AbortController();
  $("explain").disabled = true;
  $("stop").disabled = false;
  const prompt = $("prompt").value;
  const scored = new Map(); // unit -> its total relevance, as batches finish (in the schedule's order)
  const started = performance.now();
  try {
    $("status").textContent = "loading the folder ...";
    const explainer = await load($("folder").value, $("backend").value);
    $("status").textContent = "explaining ...";
    const conceptual = $("conceptual").value === "" ? null : Number($("conceptual").value);
    const explanation = await explainer.explain(prompt, $("target").value || null, {
      granularity: $("granularity").value,
      factor: Number($("factor").value),
      conceptual,
      batchSize: Number($("batch").value),
      signal: controller.signal,
      onProgress: (done, total) => {
        $("progress").max = total;
        $("progress").value = done;
        $("status").textContent = `${done} of ${total} units scored`;
      },
      onRows: (batch, relevance) => {
        batch.forEach((unit, i) => scored.set(unit, relevance[i].reduce((s, x) => s + x, 0)));
        const units = [...scored.keys()].sort((a, b) => a.start - b.start);
        draw(prompt, units, units.map((unit) => scored.get(unit)));
      },
    });
    draw(explanation.fields.prompt, explanation.fields.units, explanation.total);
    $("target").value = explanation.fields.target; // a generated one, to see (and explain again)
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const { units, timings } = explanation.fields;
    $("status").textContent = `${units.length} units, ${timings.passes} passes, ${seconds} s`;
  } catch (error) {
    $("status").textContent = error.name === "AbortError" ? "stopped" : `error: ${error.message}`;
  } finally {
    $("explain").disabled = false;
    $("stop").disabled = true;
  }
}

if (!("gpu" in navigator)) $("backend").querySelector("[value=webgpu]").disabled = true; // no WebGPU here
$("form").addEventListener("submit", explain);
$("stop").addEventListener("click", () => controller?.abort());
if (location.hash === "#run") $("form").requestSubmit(); // a link that explains the defaults at once
