/**
 * A static file server with the media types Deno and browsers need: `.ts` as `application/typescript` (Deno
 * refuses a module served as, e.g., Debian's `text/vnd.trolltech.linguist` from `python3 -m http.server`),
 * `.wasm` as `application/wasm`, checkpoints as `application/octet-stream`. Serves files only (a folder's
 * `index.html`, no listings) and refuses any path that leaves the root, symbolic links included.
 *
 * `deno task serve [ROOT] [--port N] [--host H]` (default: this repository on 127.0.0.1:8000), e.g. for
 * `deno run --allow-import=127.0.0.1:8000 app.ts` importing `http://127.0.0.1:8000/mod.ts`, or
 * `deno task serve dist` for the browser demo.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runCli, UsageError } from "../examples/lib/cli.ts";

/** Media type by file extension (lower case, without the dot); anything else is `application/octet-stream`. */
export const MEDIA_TYPES: Readonly<Record<string, string>> = {
  ts: "application/typescript; charset=utf-8",
  mts: "application/typescript; charset=utf-8",
  tsx: "text/tsx; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  json: "application/json; charset=utf-8",
  map: "application/json; charset=utf-8",
  html: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  wasm: "application/wasm",
  safetensors: "application/octet-stream",
  pth: "application/octet-stream",
};

/** The media type of a path by its extension. */
export function mediaType(path: string): string {
  const ext = /\.([^./]+)$/.exec(path)?.[1]?.toLowerCase() ?? "";
  return MEDIA_TYPES[ext] ?? "application/octet-stream";
}

/** Options of `serveStatic`. */
export interface ServeOptions {
  /** Interface to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Port (default 8000; 0 picks a free one: read it from the server's `addr`). */
  port?: number;
  /** Called with each served file's URL path (for logs and tests). */
  onServe?: (path: string) => void;
  /** Called once listening (default: prints the URL). */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** The real path of a request's file under `realRoot`, or null when the request leaves the root. */
async function resolveUnder(realRoot: string, urlPath: string): Promise<string | null> {
  let path: string;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes("\0") || path.split("/").some((s) => s === "..")) return null;
  let real: string;
  try {
    real = await Deno.realPath(`${realRoot}${path}`);
  } catch {
    return ""; // not found
  }
  return real === realRoot || real.startsWith(`${realRoot}/`) ? real : null;
}

/** Serves the files under `root` (see the module doc); returns the running server. */
export async function serveStatic(root: string, opts: ServeOptions = {}): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const realRoot = (await Deno.realPath(root)).replace(/\/$/, "");
  return Deno.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 8000,
    onListen: opts.onListen ?? ((a) => console.log(`serving ${realRoot} at http://${a.hostname}:${a.port}/`)),
  }, async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return new Response("method not allowed", { status: 405 });
    const urlPath = new URL(req.url).pathname;
    let file = await resolveUnder(realRoot, urlPath);
    if (file === null) return new Response("forbidden", { status: 403 });
    if (file !== "" && (await Deno.stat(file)).isDirectory) {
      file = await resolveUnder(realRoot, `${urlPath.replace(/\/$/, "")}/index.html`);
      if (file === null) return new Response("forbidden", { status: 403 });
    }
    if (file === "") return new Response("not found", { status: 404 });
    const body = await Deno.readFile(file);
    opts.onServe?.(urlPath);
    const headers = { "content-type": mediaType(file), "content-length": String(body.length) };
    return new Response(req.method === "HEAD" ? null : body, { headers });
  });
}

const USAGE = `Usage: deno task serve [ROOT] [--port N] [--host H]

Serves the files under ROOT (default: the current folder) with the media types Deno and browsers
need (.ts application/typescript, .wasm application/wasm, ...). Files only: no listings, no path
outside ROOT. Needs --allow-net=H and --allow-read=ROOT (the task grants 127.0.0.1 and the repository).

Options:
  --port N     port (default 8000)
  --host H     interface (default 127.0.0.1)
  -h, --help   show this help`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { port: { type: "string" }, host: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length > 1) throw new UsageError(`one ROOT folder, got ${positionals.length}`);
  const port = Number(values.port ?? 8000);
  if (!(Number.isInteger(port) && port >= 0 && port < 65536)) throw new UsageError(`--port: 0 to 65535`);
  const root = positionals[0] ?? ".";
  const isDir = await Deno.stat(root).then((s) => s.isDirectory, () => false);
  if (!isDir) throw new UsageError(`${root}: not a folder`);
  await (await serveStatic(root, { port, hostname: values.host })).finished;
  return 0;
}

if (import.meta.main) await runCli(main, USAGE);
