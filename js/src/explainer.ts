/** The entry point: load an exported folder and explain what a completion depends on (atman_onnx/explainer.py).
 *
 * Each completion gets one unperturbed pass (its log-probs, its input embeddings for conceptual suppression, and
 * every position's keys and values), then every unit's row, several rows per graph call: with the prefix schedule
 * (default) a batch feeds only the positions from its first changed one on, on the cached keys and values of the
 * positions before (docs/method.md, "The prefix schedule"); with the naive one every row feeds every position. */

import { CodeText, cpLength } from "./chars.js";
import { encodePrompt, encodeTarget, fedTokens } from "./encode.js";
import { Explanation } from "./explanation.js";
import { checkUnits, planFactors } from "./factors.js";
import { readText, required, toSource, type FileSource } from "./files.js";
import { generate } from "./generate.js";
import { Graph, type Cache } from "./graph.js";
import { targetColumns } from "./groups.js";
import { parseManifest, type Manifest } from "./manifest.js";
import type { Span } from "./offsets.js";
import type { OrtModule } from "./ort.js";
import { firstChanged, planBatches } from "./plan.js";
import { makeRequest, type ExplainRequest, type Prompt, type RequestFields } from "./request.js";
import { byColumns, contrastColumn, relevance } from "./score.js";
import { TextCodec } from "./text.js";
import { makeUnits, type Unit } from "./units.js";
import { coverWarnings } from "./warnings.js";

/** Token positions one graph call feeds when the batch size is not given: rows = this / fed positions. */
export const POSITIONS_PER_CALL = 4096;

export interface LoadOptions {
  /** the ONNX Runtime module: ``onnxruntime-node`` in Node, ``onnxruntime-web`` in a browser */
  ort: OrtModule;
  /** ONNX Runtime session options (e.g. ``{executionProviders: ["wasm"]}``) */
  sessionOptions?: Record<string, unknown>;
}

export interface RunOptions {
  /** called after every batch with the perturbations done and their total */
  onProgress?: (done: number, total: number) => void;
  /** aborting it rejects the explanation with an AbortError, between graph calls */
  signal?: AbortSignal;
  /** called after every batch with its units (in the schedule's order) and their relevance rows (one value per
   * target token), to show them as they come; not called with a contrast, whose column needs both completions */
  onRows?: (units: Unit[], relevance: number[][]) => void;
}

export interface ExplainOptions extends RunOptions {
  /** "prefix" (default) or "naive" */
  schedule?: string;
  factor?: number;
  conceptual?: number | null;
  granularity?: string;
  contrast?: string | null;
  /** columns of relevance: "token" (default), "sentence" (each sentence of the target) or "complete" */
  targetGranularity?: string;
  /** the length limit of the generated target, when target is null (default 32) */
  maxNewTokens?: number;
  batchSize?: number | null;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DOMException("the explanation was aborted", "AbortError");
}

/** Rows ``rows`` of a row-major matrix ``width`` wide. */
function rowsOf(matrix: Float32Array, rows: number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, k) => out.set(matrix.subarray(row * width, (row + 1) * width), k * width));
  return out;
}

export class Explainer {
  private constructor(
    readonly graph: Graph,
    readonly codec: TextCodec,
    readonly manifest: Manifest,
    /** where the graph runs, as the explanation reports it */
    readonly provider: string,
  ) {}

  /** Open an exported folder: a path (Node), a URL (fetched), or any ``FileSource``. */
  static async load(folder: string | URL | FileSource, options: LoadOptions): Promise<Explainer> {
    const source = toSource(folder);
    const manifestText = await readText(source, "atman.json");
    if (manifestText === null) throw new Error(`${source.where} has no atman.json; is it an atman-onnx export?`);
    const manifest = parseManifest(manifestText, source.where);
    const [tokenizerText, template, model] = await Promise.all([
      readText(source, "tokenizer.json"),
      readText(source, "chat_template.jinja"),
      required(source, "model.onnx"),
    ]);
    if (tokenizerText === null) throw new Error(`${source.where} has no tokenizer.json; export it again`);
    const codec = new TextCodec(JSON.parse(tokenizerText), template, manifest.special_tokens);
    const session = await options.ort.InferenceSession.create(model, options.sessionOptions);
    const providers = options.sessionOptions?.executionProviders;
    const first = Array.isArray(providers) ? providers[0] : undefined;
    const provider = typeof first === "string" ? first : (first as { name?: string } | undefined)?.name ?? "cpu";
    return new Explainer(new Graph(options.ort, session, manifest), codec, manifest, provider);
  }

  /** Explain ``target`` (or, when null, the model's greedy completion) given ``prompt`` (text, or chat messages
   * rendered with the model's template). */
  explain(prompt: Prompt, target: string | null, options: ExplainOptions = {}): Promise<Explanation> {
    const { onProgress, signal, onRows, batchSize, targetGranularity, maxNewTokens, ...rest } = options;
    const fields = {
      ...rest,
      prompt,
      target,
      batch_size: batchSize,
      target_granularity: targetGranularity,
      max_new_tokens: maxNewTokens,
    };
    return this.run(fields, { onProgress, signal, onRows });
  }

  /** Explain one request given as JSON has it (the HTTP API's field names). */
  async run(fields: RequestFields, options: RunOptions = {}): Promise<Explanation> {
    const { signal } = options;
    const started = performance.now();
    const request = makeRequest(fields);
    const encoded = encodePrompt(this.codec, request.prompt);
    let target = request.target;
    let targetIds = target === null ? null : encodeTarget(this.codec, target);
    const contrastIds = request.contrast === null ? null : encodeTarget(this.codec, request.contrast);
    if (target === null || targetIds === null) {
      this.checkLength(encoded.ids.length + request.maxNewTokens - 1);
      const stops = this.manifest.special_tokens.eos_token_ids ?? [];
      targetIds = await generate(this.graph, encoded.ids, request.maxNewTokens, stops, () => checkAbort(signal));
      if (!targetIds.length) throw new Error("the model generated no target tokens; pass a target");
      target = this.codec.decode(targetIds);
    }
    const generated = performance.now();
    const completions = contrastIds === null ? [targetIds] : [targetIds, contrastIds];
    for (const ids of completions) this.checkLength(encoded.ids.length + ids.length - 1);
    const tokens = fedTokens(this.codec, encoded, targetIds);
    const units = makeUnits(
      encoded.text,
      target,
      tokens,
      encoded.ids.length,
      request.granularity,
      encoded.content,
      request.contrast === null,
    );
    const progress = { done: 0, total: units.length * completions.length };
    let passes = 0;
    let positions = 0;
    let batchSize = 1;
    const scores: number[][][] = [];
    for (const ids of completions) {
      const run = await this.score(encoded.ids, ids, units, request, progress, {
        ...options,
        onRows: contrastIds === null ? options.onRows : undefined,
      });
      scores.push(run.relevance);
      passes += run.passes;
      positions += run.positions;
      batchSize = run.batchSize;
    }
    const contrast = request.contrast;
    let targetTokens = this.codec.tokenTexts(targetIds);
    let matrix = scores[0];
    if (contrast !== null) {
      targetTokens = [`${target} (vs ${contrast})`];
      matrix = contrastColumn(scores[0], scores[1]);
    } else if (request.targetGranularity !== "token") {
      const columns = this.targetColumns(targetTokens, request.targetGranularity);
      targetTokens = columns.map((column) => column.map((t) => targetTokens[t]).join(""));
      matrix = byColumns(matrix, columns);
    }
    const finished = performance.now();
    return new Explanation({
      prompt: encoded.text,
      target,
      prompt_ids: encoded.ids,
      target_ids: targetIds,
      tokens,
      target_tokens: targetTokens,
      units,
      relevance: matrix,
      mode: this.manifest.mode,
      suppression_factor: request.factor,
      conceptual_threshold: request.conceptual,
      granularity: request.granularity,
      target_granularity: request.targetGranularity,
      contrast,
      contrast_ids: contrastIds,
      model: this.manifest.source,
      provider: this.provider,
      timings: {
        generate_s: (generated - started) / 1000,
        explain_s: (finished - generated) / 1000,
        total_s: (finished - started) / 1000,
        passes,
        batch_size: batchSize,
        schedule: request.schedule,
        positions_computed: positions,
      },
      warnings: coverWarnings(request.granularity, units, encoded.ids.length, this.manifest.mode),
    });
  }

  private checkLength(n: number): void {
    if (n > this.manifest.max_positions) {
      throw new Error(`sequence of ${n} tokens is longer than the model's ${this.manifest.max_positions} positions`);
    }
  }

  /** The target tokens (their texts) in columns of ``granularity``: each sentence of the target, or all of it. */
  private targetColumns(texts: string[], granularity: string): number[][] {
    const offsets: Span[] = [];
    let at = 0;
    for (const text of texts) {
      const end = at + cpLength(text);
      offsets.push([at, end]);
      at = end;
    }
    return targetColumns(new CodeText(texts.join("")), offsets, granularity);
  }

  /** One completion: its unperturbed pass, then every unit's row in batches (``planBatches``); its relevance
   * [units][targets]. A label before a row's first changed position keeps its unperturbed log-prob exactly, and a
   * batch that changes no label makes no call. */
  private async score(
    promptIds: number[],
    ids: number[],
    units: Unit[],
    request: ExplainRequest,
    progress: { done: number; total: number },
    { onProgress, signal, onRows }: RunOptions,
  ) {
    const fed = [...promptIds, ...ids.slice(0, -1)];
    const n = fed.length;
    const labelPositions = ids.map((_, t) => promptIds.length - 1 + t);
    checkAbort(signal);
    const base = await this.graph.score(fed, new Float32Array(n).fill(1), labelPositions, ids, null, true);
    const groups = checkUnits(units.map((u) => u.positions), n);
    const { conceptual: threshold } = request;
    const embeddings = base.embeddings as Float32Array;
    const conceptual = threshold === null ? null : { threshold, embeddings, hidden: this.manifest.hidden_size };
    const factors = planFactors(groups, n, request.factor, conceptual);
    const starts = firstChanged(factors, n);
    const batchSize = request.batchSize ?? Math.max(1, Math.min(groups.length, Math.floor(POSITIONS_PER_CALL / n)));
    const perturbed = new Float32Array(groups.length * ids.length);
    groups.forEach((_, row) => perturbed.set(base.logprobs, row * ids.length));
    let positions = n;
    for (const { rows, start } of planBatches(starts, batchSize, request.schedule, n)) {
      const scored = labelPositions.flatMap((p, t) => (p >= start ? [t] : []));
      if (scored.length) {
        checkAbort(signal);
        const batch = rowsOf(factors, rows, n);
        const past = start > 0 ? this.graph.cut(base.cache as Cache, start) : null;
        const labels = scored.map((t) => ids[t]);
        const at = scored.map((t) => labelPositions[t] - start);
        const { logprobs } = await this.graph.score(fed.slice(start), batch, at, labels, past);
        rows.forEach((row, k) => {
          scored.forEach((t, j) => {
            if (labelPositions[t] >= starts[row]) perturbed[row * ids.length + t] = logprobs[k * scored.length + j];
          });
        });
        positions += rows.length * (n - start);
      }
      progress.done += rows.length;
      onProgress?.(progress.done, progress.total);
      onRows?.(
        rows.map((row) => units[row]),
        relevance(base.logprobs, rowsOf(perturbed, rows, ids.length)),
      );
    }
    return { relevance: relevance(base.logprobs, perturbed), passes: groups.length + 1, positions, batchSize };
  }

  /** Give back the ONNX Runtime session. */
  async release(): Promise<void> {
    await this.graph.release();
  }
}
