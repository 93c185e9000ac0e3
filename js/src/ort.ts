/** The part of ONNX Runtime's JavaScript API this package uses. Pass the module itself (``onnxruntime-node`` in
 * Node, ``onnxruntime-web`` in a browser): both fit, and this package imports neither. */

export type TensorType = "float32" | "int64";

export interface OrtTensor {
  readonly dims: readonly number[];
  readonly data: unknown;
}

export interface OrtSession {
  run(feeds: Record<string, OrtTensor>, fetches: readonly string[]): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}

export interface OrtModule {
  Tensor: new (type: TensorType, data: Float32Array | BigInt64Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: {
    create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession>;
  };
}
