/** atman-onnx for JavaScript: AtMan explanations from exported atman-onnx folders, with ONNX Runtime in Node or the
 * browser. */

export { Explainer, type ExplainOptions, type LoadOptions } from "./explainer.js";
export { POSITIONS_PER_CALL, SCORES_BUDGET, type RunOptions } from "./scoring.js";
export { Explanation, JSON_VERSION, type ExplanationFields, type Timings } from "./explanation.js";
export { diskSource, urlSource, type FileSource } from "./files.js";
export type { Manifest, Mode } from "./manifest.js";
export type { OrtModule, OrtSession, OrtTensor } from "./ort.js";
export {
  DEFAULT_FACTOR,
  DEFAULT_MAX_NEW_TOKENS,
  GRANULARITIES,
  TARGET_GRANULARITIES,
  makeRequest,
  type ExplainRequest,
  type Granularity,
  type Prompt,
  type RequestFields,
  type TargetGranularity,
} from "./request.js";
export { SCHEDULES, type Schedule } from "./plan.js";
export type { Message } from "./text.js";
export type { Segment, Token, Unit } from "./units.js";
