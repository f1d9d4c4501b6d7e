/**
 * A small PNG encoder (8-bit RGB or RGBA, zlib through the built-in `CompressionStream("deflate")`, CRC-32 per
 * chunk, per-row adaptive filters) and `svgToPng`, which rasterises an SVG string with resvg.
 *
 * `svgToPng` uses the native `npm:@resvg/resvg-js` addon when `--allow-ffi` and `--allow-sys` are granted (it
 * loads a platform binary, `@resvg/resvg-js-linux-x64-gnu` etc., an optional dependency that Deno fetches with
 * the package, and probes the platform through `process.report`), and otherwise the WebAssembly build
 * `npm:@resvg/resvg-wasm`, which needs only `--allow-read` (its `.wasm` file in Deno's npm cache and a system
 * font for the text). Both work offline once Deno has cached them.
 *
 * @module
 */

/** An RGBA image, 8 bits per channel, row-major. */
export interface RgbaImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width * height * 4` bytes, RGBA. */
  data: Uint8Array | Uint8ClampedArray;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO-HDLC, as PNG and zlib's `crc32`) of `bytes`; pass a previous result as `crc` to continue it. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Adler-32 of `bytes` (the checksum that ends a zlib stream). */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  const MOD = 65521;
  for (let i = 0; i < bytes.length;) {
    const end = Math.min(i + 5552, bytes.length); // the largest run without overflow
    for (; i < end; i++) {
      a += bytes[i];
      b += a;
    }
    a %= MOD;
    b %= MOD;
  }
  return ((b << 16) | a) >>> 0;
}

async function pipe(bytes: Uint8Array, stream: CompressionStream | DecompressionStream): Promise<Uint8Array> {
  const out = new Response(new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(stream));
  return new Uint8Array(await out.arrayBuffer());
}

/** zlib-wrapped DEFLATE (RFC 1950), as PNG's IDAT needs: `CompressionStream("deflate")`. */
export function zlibCompress(bytes: Uint8Array): Promise<Uint8Array> {
  return pipe(bytes, new CompressionStream("deflate"));
}

/** Inflates a zlib stream (checks its Adler-32). */
export function zlibDecompress(bytes: Uint8Array): Promise<Uint8Array> {
  return pipe(bytes, new DecompressionStream("deflate"));
}

const SIGNATURE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Filters every scanline with the PNG filter (None, Sub, Up, Average, Paeth) of the smallest sum of absolute
 * signed residuals (the usual heuristic), each row prefixed by its filter byte.
 */
function filterRows(px: Uint8Array, width: number, height: number, bpp: number): Uint8Array {
  const stride = width * bpp;
  const out = new Uint8Array(height * (stride + 1));
  const cand = Array.from({ length: 5 }, () => new Uint8Array(stride));
  const zero = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const row = px.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? px.subarray((y - 1) * stride, y * stride) : zero;
    let best = 0;
    let bestScore = Infinity;
    for (let f = 0; f < 5; f++) {
      const c = cand[f];
      let score = 0;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? row[i - bpp] : 0;
        const b = up[i];
        const cc = i >= bpp ? up[i - bpp] : 0;
        const pred = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, cc);
        const v = (row[i] - pred) & 0xff;
        c[i] = v;
        score += v < 128 ? v : 256 - v;
        if (score >= bestScore) break;
      }
      if (score < bestScore) {
        bestScore = score;
        best = f;
      }
    }
    const o = y * (stride + 1);
    out[o] = best;
    // The winner ran to completion: a candidate only stops early once it can no longer win.
    const c = cand[best];
    out.set(c, o + 1);
  }
  return out;
}

/**
 * Encodes 8-bit pixels as a PNG: `channels` 3 (RGB) or 4 (RGBA), row-major, `width * height * channels` bytes.
 *
 * @example
 * ```ts ignore
 * const red = new Uint8Array([255, 0, 0, 255]);
 * await Deno.writeFile("red.png", await encodePng(red, 1, 1, 4));
 * ```
 */
export async function encodePng(
  pixels: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
  channels: 3 | 4 = 4,
): Promise<Uint8Array> {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new RangeError(`encodePng: bad size ${width}x${height}`);
  }
  if (channels !== 3 && channels !== 4) throw new RangeError(`encodePng: channels must be 3 or 4, got ${channels}`);
  if (pixels.length !== width * height * channels) {
    throw new RangeError(
      `encodePng: ${pixels.length} bytes for ${width}x${height}x${channels} (${width * height * channels} expected)`,
    );
  }
  const px = pixels instanceof Uint8Array ? pixels : new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.length);
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 4 ? 6 : 2; // colour type: RGBA or RGB
  // compression 0, filter method 0, no interlace
  const idat = await zlibCompress(filterRows(px, width, height, channels));
  const parts = [SIGNATURE, chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Encodes an `RgbaImage` as a PNG (RGBA, or RGB when every alpha is 255 and `dropOpaqueAlpha` is set). */
export function encodeRgba(img: RgbaImage, dropOpaqueAlpha = true): Promise<Uint8Array> {
  const { width, height, data } = img;
  if (dropOpaqueAlpha) {
    let opaque = true;
    for (let i = 3; i < data.length; i += 4) {
      if (data[i] !== 255) {
        opaque = false;
        break;
      }
    }
    if (opaque) {
      const rgb = new Uint8Array(width * height * 3);
      for (let i = 0, j = 0; i < data.length; i += 4, j += 3) {
        rgb[j] = data[i];
        rgb[j + 1] = data[i + 1];
        rgb[j + 2] = data[i + 2];
      }
      return encodePng(rgb, width, height, 3);
    }
  }
  return encodePng(data, width, height, 4);
}

/** The chunks of a PNG file (type, data, whether its CRC matches); throws when it is not a PNG. */
export function pngChunks(bytes: Uint8Array): { type: string; data: Uint8Array; crcOk: boolean }[] {
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG (bad signature)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: { type: string; data: Uint8Array; crcOk: boolean }[] = [];
  for (let o = 8; o < bytes.length;) {
    if (o + 12 > bytes.length) throw new Error(`PNG truncated at byte ${o}`);
    const len = view.getUint32(o);
    if (o + 12 + len > bytes.length) throw new Error(`PNG chunk at byte ${o} runs past the end`);
    const type = String.fromCharCode(...bytes.subarray(o + 4, o + 8));
    const data = bytes.subarray(o + 8, o + 8 + len);
    const crcOk = crc32(bytes.subarray(o + 4, o + 8 + len)) === view.getUint32(o + 8 + len);
    out.push({ type, data, crcOk });
    o += 12 + len;
  }
  return out;
}

/** Width and height from a PNG's IHDR. */
export function pngSize(bytes: Uint8Array): { width: number; height: number } {
  const ihdr = pngChunks(bytes)[0];
  if (ihdr?.type !== "IHDR") throw new Error("PNG without IHDR first");
  const v = new DataView(ihdr.data.buffer, ihdr.data.byteOffset, 8);
  return { width: v.getUint32(0), height: v.getUint32(4) };
}

// ---------------------------------------------------------------------------------------------------------
// SVG -> PNG with resvg

/** Options of `svgToPng`. */
export interface SvgToPngOptions {
  /** Zoom factor of the rendering (default 1: the SVG's width and height in pixels). */
  scale?: number;
  /** Background colour painted under the SVG (default: transparent). */
  background?: string;
  /** `native` (`@resvg/resvg-js`, needs --allow-ffi --allow-sys --allow-read), `wasm` (`@resvg/resvg-wasm`,
   * needs --allow-read) or `auto` (default: native when its permissions are granted, else wasm). */
  renderer?: "auto" | "native" | "wasm";
  /** Font files for the wasm renderer (default: the first of `FONT_CANDIDATES` that can be read). */
  fontFiles?: string[];
}

/** Font files tried, in order, by the wasm renderer (which cannot enumerate system fonts itself). */
export const FONT_CANDIDATES: readonly [path: string, family: string][] = [
  ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVu Sans"],
  ["/usr/share/fonts/dejavu/DejaVuSans.ttf", "DejaVu Sans"],
  ["/usr/share/fonts/TTF/DejaVuSans.ttf", "DejaVu Sans"],
  ["/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", "Liberation Sans"],
  ["/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf", "Liberation Sans"],
  ["/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf", "Noto Sans"],
  ["/usr/share/fonts/noto/NotoSans-Regular.ttf", "Noto Sans"],
  ["/System/Library/Fonts/Supplemental/Arial.ttf", "Arial"],
  ["/Library/Fonts/Arial.ttf", "Arial"],
  ["C:\\Windows\\Fonts\\arial.ttf", "Arial"],
];

/** The font-family list the plots use; resvg picks the first family it has. */
export const FONT_FAMILY = "DejaVu Sans, Liberation Sans, Noto Sans, Arial, Helvetica, sans-serif";

/** Raised when the renderer cannot run with the granted permissions; the message names the flags to add. */
export class RendererPermissionError extends Error {
  /** Always `"RendererPermissionError"`. */
  override name = "RendererPermissionError";
}

const granted = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === "granted";

/** Which renderer `auto` picks with the current permissions. */
export function pickRenderer(): "native" | "wasm" {
  return granted({ name: "ffi" }) && granted({ name: "sys" }) && granted({ name: "read" }) ? "native" : "wasm";
}

type ResvgCtor = new (svg: string, opts: Record<string, unknown>) => {
  render(): { width: number; height: number; asPng(): Uint8Array; pixels?: Uint8Array };
};

let wasmReady: Promise<{ Resvg: ResvgCtor; fonts: Uint8Array[]; family: string | null }> | null = null;

async function loadWasm(fontFiles?: string[]) {
  const mod = await import("npm:@resvg/resvg-wasm@2.6.2");
  const url = new URL(import.meta.resolve("npm:@resvg/resvg-wasm@2.6.2/index_bg.wasm"));
  let wasm: Uint8Array;
  try {
    wasm = await Deno.readFile(url);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new RendererPermissionError(
        `rendering SVG to PNG with resvg-wasm needs read access to ${url.pathname}: run with --allow-read`,
      );
    }
    throw e;
  }
  await mod.initWasm(wasm);
  const fonts: Uint8Array[] = [];
  let family: string | null = null;
  const candidates: [string, string | null][] = fontFiles ? fontFiles.map((f) => [f, null]) : [...FONT_CANDIDATES];
  for (const [path, fam] of candidates) {
    try {
      fonts.push(await Deno.readFile(path));
      family ??= fam;
      if (!fontFiles) break; // one font is enough for the plots
    } catch { /* not present or not readable: try the next */ }
  }
  if (fonts.length === 0) {
    console.warn(
      "svgToPng: no font could be read (tried " + candidates.map(([p]) => p).join(", ") +
        "); text will be missing. Grant --allow-read for one of them or pass fontFiles.",
    );
  }
  return { Resvg: mod.Resvg as ResvgCtor, fonts, family };
}

async function loadNative(): Promise<ResvgCtor> {
  const missing = [
    granted({ name: "ffi" }) ? null : "--allow-ffi",
    granted({ name: "sys" }) ? null : "--allow-sys",
    granted({ name: "read" }) ? null : "--allow-read",
  ].filter((x) => x);
  if (missing.length) {
    throw new RendererPermissionError(
      `the native resvg renderer (@resvg/resvg-js) loads a platform addon: run with ${missing.join(" ")} ` +
        `(or use the wasm renderer, which needs only --allow-read)`,
    );
  }
  // A computed specifier keeps the native packages (about 9 MB of platform binaries) out of the static module
  // graph, so programs importing this module do not download them unless the native renderer is used.
  const mod = await import(["npm:@resvg/resvg-js", "2.6.2"].join("@"));
  return (mod.Resvg ?? mod.default?.Resvg) as ResvgCtor;
}

/**
 * Renders an SVG document to PNG bytes with resvg (see the module doc for the two renderers and their
 * permissions). Throws `RendererPermissionError` naming the missing permission.
 *
 * @example
 * ```ts ignore
 * const png = await svgToPng(`<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>`, { background: "white" });
 * ```
 */
export async function svgToPng(svg: string, opts: SvgToPngOptions = {}): Promise<Uint8Array> {
  const renderer = opts.renderer === undefined || opts.renderer === "auto" ? pickRenderer() : opts.renderer;
  const fitTo = opts.scale && opts.scale !== 1 ? { mode: "zoom", value: opts.scale } : { mode: "original" };
  const background = opts.background;
  if (renderer === "native") {
    const Resvg = await loadNative();
    const r = new Resvg(svg, {
      fitTo,
      background,
      font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" },
    });
    return new Uint8Array(r.render().asPng());
  }
  wasmReady ??= loadWasm(opts.fontFiles);
  let w;
  try {
    w = await wasmReady;
  } catch (e) {
    wasmReady = null;
    throw e;
  }
  const font: Record<string, unknown> = { fontBuffers: w.fonts, loadSystemFonts: false };
  if (w.family) Object.assign(font, { defaultFontFamily: w.family, sansSerifFamily: w.family });
  const r = new w.Resvg(svg, { fitTo, background, font });
  return new Uint8Array(r.render().asPng());
}
