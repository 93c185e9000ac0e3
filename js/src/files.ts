/** Where an exported folder's files come from: the disk in Node, a base URL (fetch) in the browser. */

export interface FileSource {
  /** What the files are read from (a folder path or a URL), for messages. */
  readonly where: string;
  /** A file's bytes, or null when the folder has no such file. */
  bytes(name: string): Promise<Uint8Array | null>;
}

export async function readText(source: FileSource, name: string): Promise<string | null> {
  const bytes = await source.bytes(name);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** A required file's bytes; an Error naming the file and the folder when it is not there. */
export async function required(source: FileSource, name: string): Promise<Uint8Array> {
  const bytes = await source.bytes(name);
  if (bytes === null) throw new Error(`${source.where} has no ${name}; is it an atman-onnx export?`);
  return bytes;
}

/** Files under a base URL, read with ``fetch`` (a 404 is a missing file). */
export function urlSource(base: string | URL, init?: RequestInit): FileSource {
  const root = new URL(String(base).endsWith("/") ? String(base) : `${String(base)}/`);
  return {
    where: root.href,
    async bytes(name: string) {
      const response = await fetch(new URL(name, root), init);
      if (response.status === 404) return null;
      if (!response.ok) throw new Error(`fetching ${name} from ${root.href}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

/** Files in a folder on disk (Node only: ``node:fs`` is imported when the first file is read). */
export function diskSource(folder: string): FileSource {
  return {
    where: folder,
    async bytes(name: string) {
      const [{ readFile }, { join }] = await Promise.all([import("node:fs/promises"), import("node:path")]);
      try {
        return new Uint8Array(await readFile(join(folder, name)));
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") return null;
        throw error;
      }
    },
  };
}

/** A source for a URL (``file:`` URLs are read from disk), a folder path (in a browser page: a URL relative to
 * the page), or a source itself. */
export function toSource(folder: string | URL | FileSource): FileSource {
  if (typeof folder === "object" && "bytes" in folder) return folder;
  const text = String(folder);
  if (/^file:/i.test(text)) return diskSource(decodeURIComponent(new URL(text).pathname));
  if (/^https?:\/\//i.test(text)) return urlSource(text);
  if (typeof document !== "undefined") return urlSource(new URL(text, document.baseURI));
  return diskSource(text);
}
