/**
 * The browser demo's entry (bundled to `dist/main.js` by `deno task bundle`): loads a ViT checkpoint and an
 * image (the defaults next to the page, `?ckpt=` / `?image=` / `?heads=` in the URL, or the file inputs), runs
 * the forward pass on WebGPU and draws the last block's [CLS] attention over the patches.
 *
 * For tests the page sets `globalThis.ibotDemo` (`status` "done" or "error", the full [CLS] token and attention,
 * the adapter) and prints the first [CLS] values in `#cls`.
 *
 * @module
 */
import { initBackend } from "../../mod.ts";
import {
  attentionMap,
  type DemoModel,
  type DemoResult,
  formatCls,
  loadDemoModel,
  preprocess,
  runDemo,
} from "./demo.ts";

/** What the page exposes on `globalThis.ibotDemo`. */
export interface DemoState {
  /** "loading", "running", "done" or "error". */
  status: string;
  /** The error message when `status` is "error". */
  error?: string;
  /** The backend's description (the WebGPU adapter). */
  backend?: string;
  /** The full [CLS] token. */
  cls?: number[];
  /** `[heads, gh * gw]` [CLS] attention, row-major. */
  attention?: number[];
  /** Attention heads. */
  heads?: number;
  /** Patch grid. */
  grid?: [number, number];
  /** Milliseconds of the last forward pass (including readback). */
  ms?: number;
}

const state: DemoState = { status: "loading" };
(globalThis as unknown as { ibotDemo: DemoState }).ibotDemo = state;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

function setStatus(text: string, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${res.statusText}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Decodes an image and scales it to `size` x `size` RGBA (no colour-space conversion, no premultiplication). */
async function decodeImage(blob: Blob, size: number): Promise<ImageData> {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, size, size);
  bitmap.close();
  return ctx.getImageData(0, 0, size, size);
}

function drawImage(img: ImageData) {
  const canvas = $<HTMLCanvasElement>("image");
  const ctx = canvas.getContext("2d")!;
  const small = new OffscreenCanvas(img.width, img.height);
  small.getContext("2d")!.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

/** A heat colour for t in [0, 1]: black, red, yellow, white. */
function heat(t: number): [number, number, number] {
  const c = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
  return [c(3 * t), c(3 * t - 1), c(3 * t - 2)];
}

function drawMap(canvas: HTMLCanvasElement, map: Float32Array, [gh, gw]: [number, number]) {
  const cells = new ImageData(gw, gh);
  for (let i = 0; i < gh * gw; i++) cells.data.set([...heat(map[i]), 255], 4 * i);
  const grid = new OffscreenCanvas(gw, gh);
  grid.getContext("2d")!.putImageData(cells, 0, 0);
  const ctx = canvas.getContext("2d")!;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(grid, 0, 0, canvas.width, canvas.height);
}

function show(result: DemoResult) {
  drawMap($<HTMLCanvasElement>("attention"), attentionMap(result), result.grid);
  const heads = $("heads");
  heads.replaceChildren();
  const n = result.grid[0] * result.grid[1];
  for (let h = 0; h < result.heads; h++) {
    const one = result.attention.subarray(h * n, (h + 1) * n);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 96;
    canvas.title = `head ${h}`;
    drawMap(canvas, attentionMap({ ...result, attention: one, heads: 1 }), result.grid);
    heads.append(canvas);
  }
  $("cls").textContent = formatCls(result.cls);
}

let model: DemoModel | null = null;
let image: ImageData | null = null;

async function run() {
  if (!model || !image) return;
  state.status = "running";
  setStatus("running the forward pass on WebGPU…");
  const t0 = performance.now();
  const result = await runDemo(
    model,
    preprocess(image.data, image.width, image.height, model),
    image.width,
    image.height,
  );
  const ms = performance.now() - t0;
  drawImage(image);
  show(result);
  Object.assign(state, {
    status: "done",
    cls: Array.from(result.cls),
    attention: Array.from(result.attention),
    heads: result.heads,
    grid: result.grid,
    ms,
  });
  setStatus(`done in ${ms.toFixed(0)} ms on ${state.backend}`);
}

function fail(e: unknown) {
  const message = e instanceof Error ? e.message : String(e);
  Object.assign(state, { status: "error", error: message });
  setStatus(`error: ${message}`, true);
  console.error(e);
}

function setModel(bytes: Uint8Array, name: string) {
  const heads = params.get("heads");
  model = loadDemoModel(bytes, { name, numHeads: heads ? Number(heads) : undefined });
  const m = model;
  $("model").textContent = `${name}: patch ${m.patchSize}, ${m.imgSize} px, D ${m.embedDim}, depth ${m.depth}, ` +
    `${m.numHeads} heads, ${m.inChans} channels${m.prefix ? `, prefix '${m.prefix}'` : ""}`;
}

async function main() {
  const backend = await initBackend("webgpu");
  state.backend = (backend as { adapterInfo?: string }).adapterInfo ?? backend.name;
  const ckpt = params.get("ckpt") ?? "vit_tiny8_32.safetensors";
  setModel(await fetchBytes(ckpt), ckpt);
  const res = await fetch(params.get("image") ?? "default.png");
  if (!res.ok) throw new Error(`GET ${res.url}: ${res.status}`);
  image = await decodeImage(await res.blob(), model!.imgSize);
  await run();
}

$<HTMLInputElement>("ckpt-file").addEventListener("change", async (ev) => {
  const file = (ev.target as HTMLInputElement).files?.[0];
  if (!file) return;
  try {
    setModel(new Uint8Array(await file.arrayBuffer()), file.name);
    if (image) image = await decodeImageData(image, model!.imgSize);
    await run();
  } catch (e) {
    fail(e);
  }
});

$<HTMLInputElement>("image-file").addEventListener("change", async (ev) => {
  const file = (ev.target as HTMLInputElement).files?.[0];
  if (!file || !model) return;
  try {
    image = await decodeImage(file, model.imgSize);
    await run();
  } catch (e) {
    fail(e);
  }
});

/** Rescales already decoded pixels (when a checkpoint with another image size is loaded). */
async function decodeImageData(img: ImageData, size: number): Promise<ImageData> {
  if (img.width === size && img.height === size) return img;
  const src = new OffscreenCanvas(img.width, img.height);
  src.getContext("2d")!.putImageData(img, 0, 0);
  return await decodeImage(await src.convertToBlob(), size);
}

main().catch(fail);
