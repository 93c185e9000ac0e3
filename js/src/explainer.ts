/** The entry point: load an exported folder and explain what a completion depends on (atman_onnx/explainer.py).
 *
 * Each completion gets one unperturbed pass, then every unit's row, several rows per graph call (scoring.ts). */

import { CodeText, cpLength } from "./chars.js";
import { encodePrompt, encodeTarget, fedTokens } from "./encode.js";
import { Explanation } from "./explanation.js";
import { readText, required, toSource, type FileSource } from "./files.js";
import { generate } from "./generate.js";
import { Graph, hasExternalData } from "./graph.js";
import { targetColumns } from "./groups.js";
import { parseManifest, type Manifest } from "./manifest.js";
import type { Span } from "./offsets.js";
import type { OrtModule } from "./ort.js";
import type { Schedule } from "./plan.js";
import {
  makeRequest,
  type Granularity,
  type Prompt,
  type RequestFields,
  type TargetGranularity,
} from "./request.js";
import { byColumns, contrastColumn } from "./score.js";
import { checkAbort, rowsWithinBudget, scoreCompletion, type RunOptions } from "./scoring.js";
import { TextCodec } from "./text.js";
import { makeUnits } from "./units.js";
import { coverWarnings } from "./warnings.js";

export interface LoadOptions {
  /** the ONNX Runtime module: ``onnxruntime-node`` in Node, ``onnxruntime-web`` in a browser */
  ort: OrtModule;
  /** ONNX Runtime session options (e.g. ``{executionProviders: ["wasm"]}``) */
  sessionOptions?: Record<string, unknown>;
}

export interface ExplainOptions extends RunOptions {
  /** "prefix" (default) or "naive" */
  schedule?: Schedule;
  factor?: number;
  conceptual?: number | null;
  granularity?: Granularity;
  contrast?: string | null;
  /** columns of relevance: "token" (default), "sentence" (each sentence of the target) or "complete" */
  targetGranularity?: TargetGranularity;
  /** the length limit of the generated target, when target is null (default ``DEFAULT_MAX_NEW_TOKENS``) */
  maxNewTokens?: number;
  batchSize?: number | null;
}

/** ``text`` parsed as JSON; an Error naming the file when it is not. */
function parseJson(text: string, where: string, name: string): Record<string, unknown> {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${where}: ${name} is not JSON (${(error as Error).message})`);
  }
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
    if (typeof options?.ort?.InferenceSession?.create !== "function") {
      throw new Error("Explainer.load needs options.ort: the onnxruntime-node or onnxruntime-web module");
    }
    const source = toSource(folder);
    const manifestText = await readText(source, "atman.json");
    if (manifestText === null) throw new Error(`${source.where} has no atman.json; is it an atman-onnx export?`);
    const manifest = parseManifest(manifestText, source.where);
    const [tokenizerText, template, model] = await Promise.all([
      readText(source, "tokenizer.json"),
      readText(source, "chat_template.jinja", true),
      required(source, "model.onnx"),
    ]);
    if (tokenizerText === null) throw new Error(`${source.where} has no tokenizer.json; export it again`);
    let codec: TextCodec;
    try {
      const tokenizerJson = parseJson(tokenizerText, source.where, "tokenizer.json");
      codec = new TextCodec(tokenizerJson, template, manifest.special_tokens);
    } catch (error) {
      const message = (error as Error).message;
      throw new Error(message.startsWith(source.where) ? message : `${source.where}: tokenizer.json: ${message}`);
    }
    if (hasExternalData(model)) {
      throw new Error(
        `${source.where}: model.onnx keeps its weights in an external data file (an export over 2 GB); ` +
          "the JS runtime does not read external data yet",
      );
    }
    const session = await options.ort.InferenceSession.create(model, options.sessionOptions);
    const providers = options.sessionOptions?.executionProviders;
    const first = Array.isArray(providers) ? providers[0] : undefined;
    const provider = typeof first === "string" ? first : (first as { name?: string } | undefined)?.name ?? "cpu";
    return new Explainer(new Graph(options.ort, session, manifest), codec, manifest, provider);
  }

  /** Explain ``target`` (or, when null, the model's greedy completion) given ``prompt`` (text, or chat messages
   * rendered with the model's template). The options are camelCase (``run`` takes the JSON names). */
  async explain(prompt: Prompt, target: string | null, options: ExplainOptions = {}): Promise<Explanation> {
    const snake = Object.keys(options).find((key) => key.includes("_"));
    if (snake !== undefined) {
      const camel = snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      throw new Error(`explain() takes camelCase options: '${camel}', not '${snake}' (run() takes the JSON names)`);
    }
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
    const contrastIds = request.contrast === null ? null : encodeTarget(this.codec, request.contrast);
    let target: string;
    let targetIds: number[];
    if (request.target === null) {
      this.checkLength(encoded.ids.length + request.maxNewTokens - 1);
      rowsWithinBudget(this.manifest, encoded.ids.length, encoded.ids.length);
      const stops = this.manifest.special_tokens.eos_token_ids ?? [];
      targetIds = await generate(this.graph, encoded.ids, request.maxNewTokens, stops, () => checkAbort(signal));
      if (!targetIds.length) throw new Error("the model generated no target tokens; pass a target");
      target = this.codec.decode(targetIds);
    } else {
      target = request.target;
      targetIds = encodeTarget(this.codec, target);
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
      const run = await scoreCompletion(this.graph, encoded.ids, ids, units, request, progress, {
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

  /** Give back the ONNX Runtime session. */
  async release(): Promise<void> {
    await this.graph.release();
  }
}
