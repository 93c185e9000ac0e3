/** The folder's manifest, atman.json (docs/reference/contract.md): what the runtime needs of it, checked. */

const MODES = ["log_additive", "multiplicative"] as const;
export type Mode = (typeof MODES)[number];

export interface SpecialTokens {
  bos_token?: string | null;
  eos_token?: string | null;
  pad_token?: string | null;
  eos_token_ids?: number[];
}

export interface Manifest {
  contract_version: number;
  mode: Mode;
  source: string;
  vocab_size: number;
  hidden_size: number;
  max_positions: number;
  /** ``num_heads`` (query heads) may be absent from older manifests: then ``kv_heads`` stands in */
  dims: { num_layers: number; num_heads?: number; kv_heads: number; head_dim: number };
  special_tokens: SpecialTokens;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown>;
}

/** Versions this runtime reads: 1 (token ids, shared past) and 3 (token ids, shared and row past). Versions 2 and
 * 4 take input embeddings (image-text models), which this runtime does not support yet. */
const VERSIONS = [1, 3];

/** The manifest from atman.json's text; an Error in one line for anything this runtime cannot run. */
export function parseManifest(text: string, where: string): Manifest {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error(`${where}: atman.json is not JSON`);
  }
  if (typeof data !== "object" || data === null || !("contract_version" in data)) {
    throw new Error(`${where}: atman.json has no contract_version`);
  }
  const manifest = data as Manifest;
  const version = manifest.contract_version;
  if (version === 2 || version === 4) {
    throw new Error(`${where} is an image-text export (contract ${version}); the JS runtime reads text models only`);
  }
  if (!VERSIONS.includes(version)) {
    throw new Error(`${where} has graph contract ${version}, which this runtime does not read; export it again`);
  }
  if (!(MODES as readonly string[]).includes(manifest.mode)) {
    throw new Error(`${where}: atman.json names an unknown mode ${JSON.stringify(manifest.mode)}`);
  }
  for (const key of ["hidden_size", "max_positions"] as const) {
    if (!Number.isInteger(manifest[key])) throw new Error(`${where}: atman.json has no ${key}`);
  }
  for (const key of ["num_layers", "kv_heads", "head_dim"] as const) {
    if (!Number.isInteger(manifest.dims?.[key])) throw new Error(`${where}: atman.json has no dims.${key}`);
  }
  return manifest;
}

/** Whether the graph takes each row's own cache (versions 3 and 4). */
export function hasRowCache(manifest: Manifest): boolean {
  return manifest.contract_version >= 3;
}
