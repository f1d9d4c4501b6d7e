/**
 * Training curves of a pretraining run: reads `metrics.jsonl` (one `Progress` object per report, then a final
 * `{ step, knn, knnRandom }` line) and draws loss (total, CLS, patch), learning rate, teacher entropy,
 * teacher/student agreement, throughput and the k-NN top-1 (trained vs random init, when present) as a
 * hand-made SVG (axes, ticks, labels, legends), rendered to PNG with resvg (`examples/lib/png.ts`).
 *
 * ```sh
 * deno run --allow-read --allow-write=runs/fm examples/plot.ts --metrics runs/fm/metrics.jsonl --out runs/fm/curves.png
 * ```
 *
 * `examples/pretrain.ts --out DIR` calls `writeRunCurves(DIR)` at the end, which writes `DIR/curves.png`.
 *
 * @module
 */
import { runCli, UsageError } from "./lib/cli.ts";
import { parseArgs } from "node:util";
import { FONT_FAMILY, pngSize, RendererPermissionError, svgToPng } from "./lib/png.ts";

/** One parsed metrics file. */
export interface RunMetrics {
  /** Progress reports, in file order (a resumed run appends; a repeated step keeps the last report). */
  rows: Record<string, number>[];
  /** k-NN lines: top-1 per k of the trained teacher and of a random network, with the step they were taken at. */
  knn: { step: number; knn: Record<string, number>; knnRandom: Record<string, number> }[];
}

/** Parses `metrics.jsonl` text; blank lines are skipped, a malformed line is reported with its number. */
export function parseMetrics(text: string, file = "metrics.jsonl"): RunMetrics {
  const byStep = new Map<number, Record<string, number>>();
  const knn: RunMetrics["knn"] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not JSON (${(e as Error).message})`);
    }
    if (typeof o !== "object" || o === null || typeof o.step !== "number") {
      throw new Error(`${file}:${i + 1}: expected an object with a numeric 'step'`);
    }
    if ("knn" in o) {
      const k = (o.knn ?? {}) as Record<string, number>;
      const r = (o.knnRandom ?? {}) as Record<string, number>;
      if (Object.keys(k).length || Object.keys(r).length) knn.push({ step: o.step, knn: k, knnRandom: r });
      return;
    }
    const row: Record<string, number> = {};
    for (const [key, v] of Object.entries(o)) if (typeof v === "number") row[key] = v;
    byStep.set(o.step, row);
  });
  const rows = [...byStep.values()].sort((a, b) => a.step - b.step);
  return { rows, knn };
}

// ---------------------------------------------------------------------------------------------------------
// SVG building blocks

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const num = (v: number) => (Math.round(v * 100) / 100).toString();

/** "Nice" tick values covering `[lo, hi]` (steps of 1, 2 or 5 times a power of ten), about `count` of them. */
export function niceTicks(
  lo: number,
  hi: number,
  count = 5,
): { ticks: number[]; step: number; lo: number; hi: number } {
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) return { ticks: [0, 1], step: 1, lo: 0, hi: 1 };
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const a = Math.floor(lo / step + 1e-9) * step;
  const b = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = a; v <= b + step * 1e-6; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return { ticks, step, lo: a, hi: b };
}

/**
 * A tick label with as many decimals as the tick step needs; for tiny or huge values one exponent per axis
 * (that of the largest tick, `maxAbs`), e.g. 0.5e-4, 1.0e-4, 1.5e-4.
 */
export function tickLabel(v: number, step: number, maxAbs = Math.abs(v)): string {
  if (v === 0) return "0";
  const big = Math.max(maxAbs, Math.abs(v), Math.abs(step));
  if (Math.abs(step) < 1e-3 || big >= 1e6) {
    const e = Math.floor(Math.log10(big) + 1e-9);
    const decimals = Math.max(0, e - Math.floor(Math.log10(Math.abs(step)) + 1e-9));
    return `${(v / 10 ** e).toFixed(Math.min(decimals, 4))}e${e}`;
  }
  if (big >= 1e4 && Number.isInteger(step / 1000)) return `${v / 1000}k`;
  const decimals = Math.max(0, -Math.floor(Math.log10(Math.abs(step)) + 1e-9));
  return v.toFixed(decimals);
}

/** A series of (x, y) points. */
interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dash?: string;
}

/** Colours of the series (Okabe-Ito, colour-blind safe). */
const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"];

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

function legend(series: { name: string; color: string; dash?: string; bar?: boolean }[], x: number, y: number) {
  let out = "";
  let cx = x;
  for (const s of series) {
    const sample = s.bar
      ? `<rect x="${cx}" y="${y - 7}" width="14" height="9" fill="${s.color}"/>`
      : `<line x1="${cx}" y1="${y - 3}" x2="${cx + 16}" y2="${y - 3}" stroke="${s.color}" stroke-width="2.5"${
        s.dash ? ` stroke-dasharray="${s.dash}"` : ""
      }/>`;
    out += sample + `<text x="${cx + 20}" y="${y}" font-size="11" fill="#333">${esc(s.name)}</text>`;
    cx += 28 + s.name.length * 6.5;
  }
  return out;
}

function frame(b: Box, title: string): string {
  return `<rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" fill="#fff" stroke="#ccc"/>` +
    `<text x="${b.x + 10}" y="${b.y + 20}" font-size="14" font-weight="bold" fill="#222">${esc(title)}</text>`;
}

/** Plot area inside a panel (room for the title, the legend, tick labels and the x-axis label). */
function plotArea(b: Box): Box {
  return { x: b.x + 58, y: b.y + 46, w: b.w - 74, h: b.h - 86 };
}

function axes(a: Box, xt: ReturnType<typeof niceTicks>, yt: ReturnType<typeof niceTicks>, xLabel: string): string {
  const sx = (v: number) => a.x + ((v - xt.lo) / (xt.hi - xt.lo)) * a.w;
  const sy = (v: number) => a.y + a.h - ((v - yt.lo) / (yt.hi - yt.lo)) * a.h;
  let out = "";
  for (const t of yt.ticks) {
    const y = num(sy(t));
    out += `<line x1="${a.x}" y1="${y}" x2="${a.x + a.w}" y2="${y}" stroke="#eee"/>` +
      `<line x1="${a.x - 4}" y1="${y}" x2="${a.x}" y2="${y}" stroke="#444"/>` +
      `<text x="${a.x - 7}" y="${num(sy(t) + 4)}" font-size="11" text-anchor="end" fill="#444">${
        tickLabel(t, yt.step, Math.max(...yt.ticks.map(Math.abs)))
      }</text>`;
  }
  for (const t of xt.ticks) {
    const x = num(sx(t));
    out += `<line x1="${x}" y1="${a.y}" x2="${x}" y2="${a.y + a.h}" stroke="#f3f3f3"/>` +
      `<line x1="${x}" y1="${a.y + a.h}" x2="${x}" y2="${a.y + a.h + 4}" stroke="#444"/>` +
      `<text x="${x}" y="${a.y + a.h + 16}" font-size="11" text-anchor="middle" fill="#444">${
        tickLabel(t, xt.step, Math.max(...xt.ticks.map(Math.abs)))
      }</text>`;
  }
  out += `<rect x="${a.x}" y="${a.y}" width="${a.w}" height="${a.h}" fill="none" stroke="#444"/>`;
  out += `<text x="${a.x + a.w / 2}" y="${a.y + a.h + 32}" font-size="11" text-anchor="middle" fill="#444">${
    esc(xLabel)
  }</text>`;
  return out;
}

/** A line chart panel; a series of one point is drawn as a dot. */
function linePanel(b: Box, title: string, series: Series[], xLabel = "step"): string {
  let out = frame(b, title);
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) {
    return out + `<text x="${b.x + b.w / 2}" y="${b.y + b.h / 2}" font-size="12" text-anchor="middle" fill="#888">` +
      `no data</text>`;
  }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const xt = niceTicks(Math.min(...xs), Math.max(...xs), 5);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const a = plotArea(b);
  out += axes(a, xt, yt, xLabel);
  const sx = (v: number) => a.x + ((v - xt.lo) / (xt.hi - xt.lo)) * a.w;
  const sy = (v: number) => a.y + a.h - ((v - yt.lo) / (yt.hi - yt.lo)) * a.h;
  for (const s of series) {
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (p.length === 1) {
      out += `<circle cx="${num(sx(p[0][0]))}" cy="${num(sy(p[0][1]))}" r="3" fill="${s.color}"/>`;
    } else if (p.length > 1) {
      const d = p.map(([x, y], i) => `${i ? "L" : "M"}${num(sx(x))},${num(sy(y))}`).join("");
      out += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2" stroke-linejoin="round"${
        s.dash ? ` stroke-dasharray="${s.dash}"` : ""
      }/>`;
      if (p.length <= 30) {
        for (const [x, y] of p) out += `<circle cx="${num(sx(x))}" cy="${num(sy(y))}" r="2.2" fill="${s.color}"/>`;
      }
    }
  }
  if (series.length > 1) out += legend(series, a.x + 4, b.y + 38);
  return out;
}

/** Grouped bars: one group per category, one bar per series, values in [0, 1] shown as percent. */
function barPanel(b: Box, title: string, categories: string[], series: { name: string; values: number[] }[]): string {
  let out = frame(b, title);
  const a = plotArea(b);
  const max = Math.max(...series.flatMap((s) => s.values).filter(Number.isFinite), 0);
  const yt = niceTicks(0, Math.max(max * 100, 10), 4);
  const xt = { ticks: [] as number[], step: 1, lo: 0, hi: 1 };
  out += axes(a, xt, yt, "k (neighbours)");
  const sy = (v: number) => a.y + a.h - ((v - yt.lo) / (yt.hi - yt.lo)) * a.h;
  const group = a.w / categories.length;
  const bw = Math.min(28, (group * 0.7) / series.length);
  categories.forEach((c, i) => {
    const gx = a.x + group * i + group / 2;
    out += `<text x="${num(gx)}" y="${a.y + a.h + 16}" font-size="11" text-anchor="middle" fill="#444">${
      esc(c)
    }</text>`;
    series.forEach((s, j) => {
      const v = s.values[i] * 100;
      if (!Number.isFinite(v)) return;
      const x = gx - (bw * series.length) / 2 + j * bw;
      out +=
        `<rect x="${num(x)}" y="${num(sy(v))}" width="${num(bw - 2)}" height="${num(sy(0) - sy(v))}" fill="${
          COLORS[j]
        }"/>` +
        `<text x="${num(x + (bw - 2) / 2)}" y="${num(sy(v) - 3)}" font-size="9" text-anchor="middle" fill="#333">${
          v.toFixed(1)
        }</text>`;
    });
  });
  out += legend(series.map((s, j) => ({ name: s.name, color: COLORS[j], bar: true })), a.x + 4, b.y + 38);
  return out;
}

/** Options of `curvesSvg`. */
export interface CurvesOptions {
  /** Title line (default: "iBOT pretraining"). */
  title?: string;
  /** Canvas width in pixels (default 1200). */
  width?: number;
  /** Canvas height in pixels (default 760). */
  height?: number;
}

/** Default canvas size of `curvesSvg` / `writeCurves`. */
export const CURVES_SIZE = { width: 1200, height: 760 } as const;

/** The SVG document of a run's curves: six panels in a 3 x 2 grid under a title line. */
export function curvesSvg(m: RunMetrics, opts: CurvesOptions = {}): string {
  const W = opts.width ?? CURVES_SIZE.width;
  const H = opts.height ?? CURVES_SIZE.height;
  const top = 44;
  const cols = 3;
  const rows = 2;
  const gap = 12;
  const pw = (W - gap * (cols + 1)) / cols;
  const ph = (H - top - gap * rows) / rows;
  const box = (i: number): Box => ({
    x: gap + (i % cols) * (pw + gap),
    y: top + Math.floor(i / cols) * (ph + gap),
    w: pw,
    h: ph,
  });
  const col = (key: string): [number, number][] =>
    m.rows.filter((r) => typeof r[key] === "number").map((r) => [r.step, r[key]]);

  const last = m.rows.at(-1);
  const subtitle = last
    ? `${m.rows.length} reports, step ${last.step}${last.totalSteps ? ` of ${last.totalSteps}` : ""}, ` +
      `last loss ${last.loss?.toFixed(4)} (cls ${last.cls?.toFixed(4)}, patch ${last.patch?.toFixed(4)})`
    : "no progress reports";
  let body = `<text x="${gap}" y="28" font-size="18" font-weight="bold" fill="#111">${
    esc(opts.title ?? "iBOT pretraining")
  }</text><text x="${W - gap}" y="28" font-size="12" text-anchor="end" fill="#555">${esc(subtitle)}</text>`;

  body += linePanel(box(0), "loss", [
    { name: "total", color: COLORS[0], points: col("loss") },
    { name: "cls (DINO)", color: COLORS[1], points: col("cls") },
    { name: "patch (MIM)", color: COLORS[2], points: col("patch") },
  ]);
  body += linePanel(box(1), "learning rate", [{ name: "lr", color: COLORS[0], points: col("lr") }]);
  body += linePanel(box(2), "teacher CLS entropy (nats)", [
    { name: "entropy", color: COLORS[3], points: col("teacherEntropy") },
  ]);
  body += linePanel(box(3), "teacher/student agreement", [
    { name: "agreement", color: COLORS[2], points: col("agreement") },
  ]);
  body += linePanel(box(4), "throughput (images/s)", [
    { name: "images/s", color: COLORS[4], points: col("imagesPerSecond").filter((_, i) => i > 0) },
  ]);

  const kn = m.knn.at(-1);
  if (m.knn.length > 1) {
    // k-NN evaluated at several steps: one line per k.
    const ks = Object.keys(m.knn[0].knn);
    body += linePanel(
      box(5),
      "k-NN top-1 (%)",
      ks.flatMap((k, i) => [
        { name: `k=${k}`, color: COLORS[i % COLORS.length], points: m.knn.map((e) => [e.step, 100 * e.knn[k]]) },
      ]),
    );
  } else if (kn) {
    const ks = [...new Set([...Object.keys(kn.knn), ...Object.keys(kn.knnRandom)])].sort((a, b) => +a - +b);
    body += barPanel(box(5), `k-NN top-1 (%) at step ${kn.step}`, ks, [
      { name: "trained", values: ks.map((k) => kn.knn[k] ?? NaN) },
      { name: "random init", values: ks.map((k) => kn.knnRandom[k] ?? NaN) },
    ]);
  } else {
    const b = box(5);
    body += frame(b, "k-NN top-1") +
      `<text x="${b.x + b.w / 2}" y="${b.y + b.h / 2}" font-size="12" text-anchor="middle" fill="#888">` +
      `no k-NN line in the metrics (yet)</text>`;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    `font-family="${FONT_FAMILY}"><rect width="${W}" height="${H}" fill="#f7f7f7"/>${body}</svg>`;
}

/** What `writeCurves` wrote. */
export interface WrittenCurves {
  /** The file written (the `.svg` fallback when the PNG could not be rendered). */
  path: string;
  /** `png`, or `svg` when rendering failed for lack of a permission (see `note`). */
  format: "png" | "svg";
  /** Image size in pixels. */
  width: number;
  /** Image size in pixels. */
  height: number;
  /** Why the PNG was not written, when `format` is `svg`. */
  note?: string;
}

function needPermission(desc: Deno.PermissionDescriptor, what: string, flag: string): void {
  const state = Deno.permissions.querySync(desc).state;
  if (state !== "granted") throw new RendererPermissionError(`${what} needs ${flag}`);
}

/**
 * Reads a run's `metrics.jsonl` and writes its curves to `outPath` (PNG; SVG when `outPath` ends in `.svg`).
 * When only the rasteriser lacks a permission, the SVG is written next to it instead (`format: "svg"`, with
 * the reason in `note`). Throws `RendererPermissionError` naming the flag when the metrics cannot be read or the
 * output cannot be written.
 *
 * @example
 * ```ts ignore
 * const w = await writeCurves("runs/fm/metrics.jsonl", "runs/fm/curves.png");
 * console.log(w.path, w.width, w.height);
 * ```
 */
export async function writeCurves(
  metricsPath: string,
  outPath: string,
  opts: CurvesOptions = {},
): Promise<WrittenCurves> {
  needPermission({ name: "read", path: metricsPath }, `reading ${metricsPath}`, `--allow-read=${metricsPath}`);
  needPermission({ name: "write", path: outPath }, `writing ${outPath}`, `--allow-write=${outPath}`);
  const metrics = parseMetrics(await Deno.readTextFile(metricsPath), metricsPath);
  const svg = curvesSvg(metrics, { ...opts, title: opts.title ?? `iBOT pretraining: ${metricsPath}` });
  const width = opts.width ?? CURVES_SIZE.width;
  const height = opts.height ?? CURVES_SIZE.height;
  if (outPath.toLowerCase().endsWith(".svg")) {
    await Deno.writeTextFile(outPath, svg);
    return { path: outPath, format: "svg", width, height };
  }
  try {
    const png = await svgToPng(svg);
    await Deno.writeFile(outPath, png);
    return { path: outPath, format: "png", ...pngSize(png) };
  } catch (e) {
    if (!(e instanceof RendererPermissionError)) throw e;
    const svgPath = outPath.replace(/\.png$/i, "") + ".svg";
    needPermission({ name: "write", path: svgPath }, `writing ${svgPath}`, `--allow-write=${svgPath}`);
    await Deno.writeTextFile(svgPath, svg);
    return { path: svgPath, format: "svg", width, height, note: e.message };
  }
}

/**
 * The end-of-run hook of `examples/pretrain.ts --out DIR`: writes `DIR/curves.png` from `DIR/metrics.jsonl` and
 * returns a one-line report; never throws (a missing permission or file becomes the report).
 */
export async function writeRunCurves(dir: string): Promise<string> {
  try {
    const w = await writeCurves(`${dir}/metrics.jsonl`, `${dir}/curves.png`);
    return w.format === "png"
      ? `curves: ${w.path} (${w.width}x${w.height})`
      : `curves: ${w.path} (SVG; no PNG because ${w.note})`;
  } catch (e) {
    return `curves: not written (${(e as Error).message}); ` +
      `run examples/plot.ts --metrics ${dir}/metrics.jsonl --out ${dir}/curves.png with --allow-read --allow-write`;
  }
}

const USAGE = `Usage: deno run --allow-read --allow-write=<out> examples/plot.ts --metrics <file> --out <png>

Draws the training curves of a pretraining run (metrics.jsonl written by examples/pretrain.ts --out DIR):
loss (total, CLS, patch), learning rate, teacher entropy, teacher/student agreement, throughput and the
k-NN top-1 of the trained teacher vs a random network, as an SVG rendered to PNG with resvg.

Options:
  --metrics FILE   the run's metrics.jsonl (needs --allow-read)
  --out FILE       the PNG to write (needs --allow-write=FILE); a name ending in .svg writes the SVG itself
  --title TEXT     title line (default: "iBOT pretraining: <metrics file>")
  --width N        canvas width in pixels (default ${CURVES_SIZE.width})
  --height N       canvas height in pixels (default ${CURVES_SIZE.height})
  -h, --help       show this help

Rendering uses @resvg/resvg-wasm with --allow-read alone (the .wasm in Deno's cache and a system font);
with --allow-ffi --allow-sys as well it uses the native @resvg/resvg-js addon.`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      metrics: { type: "string" },
      out: { type: "string" },
      title: { type: "string" },
      width: { type: "string" },
      height: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.metrics || !values.out) throw new UsageError("--metrics <file> and --out <png> are required");
  const size = (name: string, v?: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 300) throw new UsageError(`--${name} must be an integer >= 300, got '${v}'`);
    return n;
  };
  const w = await writeCurves(values.metrics, values.out, {
    title: values.title,
    width: size("width", values.width),
    height: size("height", values.height),
  });
  console.log(`wrote ${w.path} (${w.format.toUpperCase()}, ${w.width}x${w.height})`);
  if (w.note) console.error(`note: no PNG: ${w.note}`);
  return 0;
}

if (import.meta.main) await runCli(main, USAGE, [RendererPermissionError, Deno.errors.NotFound]);
