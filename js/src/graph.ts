/** The exported graph through ONNX Runtime: one call scores the target tokens of a batch of rows, each with its
 * own attention factors, fed from a first position on top of the unperturbed pass's cached keys and values. */

import { hasRowCache, type Manifest } from "./manifest.js";
import type { OrtModule, OrtSession, OrtTensor } from "./ort.js";

/** Every layer's keys and values (``past.{i}.key``, ``past.{i}.value`` in order), [1, kv_heads, length, head_dim]
 * each. */
export interface Cache {
  length: number;
  tensors: Float32Array[];
}

export interface Scored {
  /** log p(label) [rows x labels], row-major */
  logprobs: Float32Array;
  /** with ``unperturbed``: the input embeddings [seq x hidden] and every position's keys and values */
  embeddings: Float32Array | null;
  cache: Cache | null;
}

export class Graph {
  private readonly presentNames: string[];

  constructor(
    private readonly ort: OrtModule,
    private readonly session: OrtSession,
    readonly manifest: Manifest,
  ) {
    const layers = manifest.dims.num_layers;
    this.presentNames = Array.from({ length: layers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
  }

  /** Rows of ``factors`` ([rows x keys], row-major; keys = past.length + ids.length) feeding ``ids`` after the
   * cached ``past``: each row's log-probs of ``labels`` at ``positions`` (within ``ids``). ``unperturbed``: one
   * row, returning the input embeddings and the keys and values too. */
  async score(
    ids: number[],
    factors: Float32Array,
    positions: number[],
    labels: number[],
    past: Cache | null,
    unperturbed = false,
  ): Promise<Scored> {
    const feeds = this.feeds(ids, factors, positions, labels, past);
    const fetches = ["label_logprobs", ...(unperturbed ? ["inputs_embeds", ...this.presentNames] : [])];
    const out = await this.session.run(feeds, fetches);
    const logprobs = Float32Array.from(out.label_logprobs.data as Float32Array);
    if (!unperturbed) return { logprobs, embeddings: null, cache: null };
    const embeddings = Float32Array.from(out.inputs_embeds.data as Float32Array);
    return { logprobs, embeddings, cache: this.present(out, ids.length, past) };
  }

  /** One unperturbed step of greedy generation: ``ids`` fed after ``past``; the logits that follow the last of
   * them, and the cache of every position so far. */
  async step(ids: number[], past: Cache | null): Promise<{ logits: Float32Array; cache: Cache }> {
    const keys = (past?.length ?? 0) + ids.length;
    const feeds = this.feeds(ids, new Float32Array(keys).fill(1), [ids.length - 1], [0], past);
    const out = await this.session.run(feeds, ["label_logits", ...this.presentNames]);
    const logits = Float32Array.from(out.label_logits.data as Float32Array);
    return { logits, cache: this.present(out, ids.length, past) };
  }

  /** The cache's first ``length`` positions. */
  cut(cache: Cache, length: number): Cache {
    const { kv_heads: heads, head_dim: size } = this.manifest.dims;
    const tensors = cache.tensors.map((tensor) => {
      const out = new Float32Array(heads * length * size);
      for (let h = 0; h < heads; h++) {
        out.set(tensor.subarray(h * cache.length * size, (h * cache.length + length) * size), h * length * size);
      }
      return out;
    });
    return { length, tensors };
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  private feeds(
    ids: number[],
    factors: Float32Array,
    positions: number[],
    labels: number[],
    past: Cache | null,
  ): Record<string, OrtTensor> {
    const { Tensor } = this.ort;
    const keys = (past?.length ?? 0) + ids.length;
    const rows = factors.length / keys;
    const int64 = (values: number[], dims: number[]) =>
      new Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
    const repeat = (values: number[]) => Array.from({ length: rows }, () => values).flat();
    const { num_layers: layers, kv_heads: heads, head_dim: size } = this.manifest.dims;
    const feeds: Record<string, OrtTensor> = {
      input_ids: int64(repeat(ids), [rows, ids.length]),
      attention_mask: int64(new Array(rows * keys).fill(1), [rows, keys]),
      attention_scale: new Tensor("float32", factors, [rows, keys]),
      label_positions: int64(repeat(positions), [rows, positions.length]),
      labels: int64(repeat(labels), [rows, labels.length]),
    };
    for (let i = 0; i < layers; i++) {
      ["key", "value"].forEach((kv, k) => {
        const cached = past?.tensors[2 * i + k] ?? new Float32Array(0);
        feeds[`past.${i}.${kv}`] = new Tensor("float32", cached, [1, heads, past?.length ?? 0, size]);
        if (hasRowCache(this.manifest)) {
          feeds[`row_past.${i}.${kv}`] = new Tensor("float32", new Float32Array(0), [rows, heads, 0, size]);
        }
      });
    }
    return feeds;
  }

  /** The keys and values of every position after a one-row call that fed ``fed`` positions after ``past``: a
   * graph with a row cache (versions 3 and 4) returns those of the fed positions only, to append to ``past``. */
  private present(out: Record<string, OrtTensor>, fed: number, past: Cache | null): Cache {
    const present = this.presentNames.map((name) => Float32Array.from(out[name].data as Float32Array));
    if (!past || !hasRowCache(this.manifest)) return { length: (past?.length ?? 0) + fed, tensors: present };
    const { kv_heads: heads, head_dim: size } = this.manifest.dims;
    const length = past.length + fed;
    const tensors = present.map((mine, t) => {
      const out = new Float32Array(heads * length * size);
      for (let h = 0; h < heads; h++) {
        out.set(past.tensors[t].subarray(h * past.length * size, (h + 1) * past.length * size), h * length * size);
        out.set(mine.subarray(h * fed * size, (h + 1) * fed * size), (h * length + past.length) * size);
      }
      return out;
    });
    return { length, tensors };
  }
}

/** The fields of one protobuf message in ``bytes[start, end)``: field number, wire type, and the value (a varint's
 * number, or a length-delimited field's bounds). */
function* protoFields(bytes: Uint8Array, start: number, end: number) {
  let at = start;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (at >= end) throw new Error("model.onnx is not an ONNX model (truncated protobuf)");
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) return value;
    }
  };
  while (at < end) {
    const key = varint();
    const [field, wire] = [Math.floor(key / 8), key % 8];
    if (wire === 0) yield { field, wire, value: varint(), from: 0, to: 0 };
    else if (wire === 2) {
      const length = varint();
      yield { field, wire, value: 0, from: at, to: at + length };
      at += length;
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else throw new Error("model.onnx is not an ONNX model (unknown protobuf wire type)");
  }
}

/** Whether the ONNX model ``model`` keeps an initializer in an external data file (``data_location`` EXTERNAL or
 * ``external_data`` entries): ONNX Runtime cannot load such a graph from bytes alone. */
export function hasExternalData(model: Uint8Array): boolean {
  for (const graph of protoFields(model, 0, model.length)) {
    if (graph.field !== 7 || graph.wire !== 2) continue; // ModelProto.graph
    for (const init of protoFields(model, graph.from, graph.to)) {
      if (init.field !== 5 || init.wire !== 2) continue; // GraphProto.initializer
      for (const f of protoFields(model, init.from, init.to)) {
        if (f.field === 13 || (f.field === 14 && f.value === 1)) return true; // TensorProto external_data, EXTERNAL
      }
    }
  }
  return false;
}
