/** Where an exported folder's files come from: the disk in Node, a base URL (fetch) in the browser. */

export interface FileSource {
  /** What the files are read from (a folder path or a URL), for messages. */
  readonly where: string;
  /** A file's bytes, or null when the folder has no such file (``optional``: the folder may well lack it, so an
   * answer that only means "not here", such as HTTP 403 from a bucket, counts as missing). */
  bytes(name: string, optional?: boolean): Promise<Uint8Array | null>;
}

export async function readText(source: FileSource, name: string, optional = false): Promise<string | null> {
  const bytes = await source.bytes(name, optional);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** A required file's bytes; an Error naming the file and the folder when it is not there. */
export async function required(source: FileSource, name: string): Promise<Uint8Array> {
  const bytes = await source.bytes(name);
  if (bytes === null) throw new Error(`${source.where} has no ${name}; is it an atman-onnx export?`);
  return bytes;
}

/** Files under a base URL, read with ``fetch``: a 404 is a missing file, and so is a 403 for an optional one (a
 * bucket's answer for a key it does not hold). An HTML page instead of a folder's file (a dev server's fallback
 * to index.html) is refused. */
export function urlSource(base: string | URL, init?: RequestInit): FileSource {
  const root = new URL(String(base).endsWith("/") ? String(base) : `${String(base)}/`);
  return {
    where: root.href,
    async bytes(name: string, optional = false) {
      const response = await fetch(new URL(name, root), init);
      if (response.status === 404 || (optional && response.status === 403)) return null;
      if (!response.ok) throw new Error(`fetching ${name} from ${root.href}: HTTP ${response.status}`);
      const type = response.headers.get("content-type") ?? "";
      if (/^\s*text\/html/i.test(type)) {
        const what = `fetching ${name} from ${root.href}`;
        throw new Error(`${what}: the server sent an HTML page, not the file; check the URL`);
      }
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

/** Files in a folder on disk, given as a path or a ``file:`` URL (Node only: ``node:fs`` is imported when the
 * first file is read, so that bundlers for the browser leave it out). */
export function diskSource(folder: string | URL): FileSource {
  return {
    where: String(folder),
    async bytes(name: string) {
      const [{ readFile }, { join }, { fileURLToPath }] = await Promise.all([
        import(/* webpackIgnore: true */ /* @vite-ignore */ "node:fs/promises"),
        import(/* webpackIgnore: true */ /* @vite-ignore */ "node:path"),
        import(/* webpackIgnore: true */ /* @vite-ignore */ "node:url"),
      ]);
      const path = typeof folder === "string" ? folder : fileURLToPath(folder);
      try {
        return new Uint8Array(await readFile(join(path, name)));
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") return null;
        throw error;
      }
    },
  };
}

/** A source for a URL (``file:`` URLs are read from disk), a folder path (in a browser page or worker: a URL
 * relative to its location), or a source itself. */
export function toSource(folder: string | URL | FileSource): FileSource {
  if (typeof folder === "object" && "bytes" in folder) return folder;
  const text = String(folder);
  if (/^file:/i.test(text)) return diskSource(new URL(text));
  if (/^https?:\/\//i.test(text)) return urlSource(text);
  const here = globalThis as { document?: { baseURI?: string }; location?: { href?: string } };
  const page = here.document?.baseURI ?? here.location?.href; // a page, or a Web Worker (no document)
  if (page !== undefined) return urlSource(new URL(text, page));
  return diskSource(text);
}
