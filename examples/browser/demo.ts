/**
 * The browser demo's model code, free of DOM and Deno APIs so that the page (`main.ts`) and the browser test
 * (`tests/browser_test.ts`, on Deno's WebGPU) run exactly the same steps: a ViT backbone from safetensors bytes,
 * RGBA pixels to a normalised `[1, C, S, S]` image, and a forward pass that returns the [CLS] token and the last
 * block's [CLS] attention over the patches.
 *
 * @module
 */
import {
  type Backend,
  defaultBackend,
  fromTyped,
  jit,
  parseSafetensors,
  slice,
  type Tensor,
  tree,
  vit,
  type VitParams,
} from "../../mod.ts";

/** ImageNet mean and standard deviation (the default normalisation of iBOT's RGB pipelines). */
export const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
/** See `IMAGENET_MEAN`. */
export const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];

/** A ViT backbone ready to run, with the architecture facts read from the checkpoint. */
export interface DemoModel {
  /** The backbone tree (official names). */
  params: VitParams;
  /** Attention heads (from the metadata `num_heads`, a training checkpoint's `numHeads`, or the caller). */
  numHeads: number;
  /** Patch size P. */
  patchSize: number;
  /** Training image side: `sqrt(N0) * P`. */
  imgSize: number;
  /** Input channels (1 or 3). */
  inChans: number;
  /** Embedding width D. */
  embedDim: number;
  /** Number of blocks. */
  depth: number;
  /** Name prefix of the backbone inside the file (`""`, `"backbone."`, `"teacher.backbone."`, ...). */
  prefix: string;
  /** Per-channel normalisation. */
  mean: readonly number[];
  /** Per-channel normalisation. */
  std: readonly number[];
}

/** What one forward pass gives back. */
export interface DemoResult {
  /** The [CLS] token after the final norm, `[D]`. */
  cls: Float32Array;
  /** The last block's attention of [CLS] to every patch, `[heads, gh * gw]` row-major. */
  attention: Float32Array;
  /** Attention heads. */
  heads: number;
  /** Patch grid `[gh, gw]`. */
  grid: [number, number];
}

function findNumber(value: unknown, key: string): number | undefined {
  if (value === null || typeof value !== "object") return undefined;
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === key && typeof v === "number") return v;
    const inner = findNumber(v, key);
    if (inner !== undefined) return inner;
  }
  return undefined;
}

/**
 * Reads a ViT backbone from safetensors bytes onto `backend`. The backbone may sit under a prefix (a training
 * checkpoint's `teacher.backbone.` is preferred). The number of heads is not stored in the weights: it comes
 * from `opts.numHeads`, else the metadata `num_heads`, else a `numHeads` field in a training checkpoint's JSON
 * `meta`.
 */
export function loadDemoModel(
  bytes: Uint8Array,
  opts: { numHeads?: number; name?: string; backend?: Backend } = {},
): DemoModel {
  const name = opts.name ?? "checkpoint";
  const file = parseSafetensors(bytes, name);
  const prefixes = [...file.tensors.keys()].filter((k) => k.endsWith("pos_embed")).map((k) =>
    k.slice(0, -"pos_embed".length)
  );
  if (!prefixes.length) throw new Error(`${name}: no 'pos_embed' tensor, so no ViT backbone`);
  const prefix = prefixes.find((p) => p.startsWith("teacher")) ?? prefixes.find((p) => p === "") ?? prefixes[0];
  let meta: unknown = null;
  try {
    meta = file.metadata.meta ? JSON.parse(file.metadata.meta) : null;
  } catch { /* not a training checkpoint */ }
  const numHeads = opts.numHeads ?? (file.metadata.num_heads ? Number(file.metadata.num_heads) : undefined) ??
    findNumber(meta, "numHeads");
  if (!numHeads || !Number.isInteger(numHeads)) {
    throw new Error(`${name}: the number of attention heads is unknown (no 'num_heads' metadata); pass it`);
  }
  const backend = opts.backend ?? defaultBackend();
  const entries: [string, Tensor][] = [];
  for (const [key, t] of file.tensors) {
    if (!key.startsWith(prefix)) continue;
    const dtype = t.dtype === "float64" && !backend.supports("float64") ? "float32" : t.dtype;
    const data = dtype === t.dtype ? t.data : Float32Array.from(t.data);
    entries.push([key.slice(prefix.length), fromTyped(data, t.shape, dtype, backend)]);
  }
  const params = tree.fromPaths(entries) as unknown as VitParams;
  const [D, C, P] = params.patch_embed.proj.weight.shape;
  const n0 = params.pos_embed.shape[1] - 1;
  const parse = (k: string, fallback: readonly number[]) => {
    const v = file.metadata[k];
    return v ? (JSON.parse(v) as number[]) : C === 3 ? fallback : Array(C).fill(0.5);
  };
  return {
    params,
    numHeads,
    patchSize: P,
    imgSize: Math.round(Math.sqrt(n0)) * P,
    inChans: C,
    embedDim: D,
    depth: params.blocks.length,
    prefix,
    mean: parse("mean", IMAGENET_MEAN),
    std: parse("std", IMAGENET_STD),
  };
}

/**
 * RGBA bytes (`width * height * 4`, as `ImageData` holds them) to a normalised `[C, height, width]` float32
 * image: `(v / 255 - mean) / std` per channel; one channel takes the RGB average.
 */
export function preprocess(
  rgba: ArrayLike<number>,
  width: number,
  height: number,
  model: Pick<DemoModel, "inChans" | "mean" | "std">,
): Float32Array {
  const n = width * height;
  if (rgba.length !== 4 * n) throw new RangeError(`preprocess: ${rgba.length} bytes for ${width}x${height} RGBA`);
  const C = model.inChans;
  const out = new Float32Array(C * n);
  for (let i = 0; i < n; i++) {
    if (C === 1) {
      const g = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / (3 * 255);
      out[i] = (g - model.mean[0]) / model.std[0];
    } else {
      for (let c = 0; c < C; c++) out[c * n + i] = (rgba[4 * i + c] / 255 - model.mean[c]) / model.std[c];
    }
  }
  return out;
}

const forwards = new WeakMap<DemoModel, ReturnType<typeof makeForward>>();

function makeForward(numHeads: number) {
  return jit((params: VitParams, images: Tensor) => {
    const { tokens, attention } = vit(params, images, { numHeads, returnAttention: true });
    const [, H, T] = attention.shape;
    return { cls: tokens, attention: slice(attention, [0, 0, 0, 1], [1, H, 1, T]) };
  });
}

/**
 * The forward pass on one `[C, height, width]` image (jitted once per model and image size): the [CLS] token
 * and the last block's [CLS]-to-patch attention of every head.
 */
export async function runDemo(
  model: DemoModel,
  image: Float32Array,
  width: number,
  height: number,
): Promise<DemoResult> {
  let f = forwards.get(model);
  if (!f) forwards.set(model, f = makeForward(model.numHeads));
  const backend = model.params.pos_embed.backend;
  const x = fromTyped(image, [1, model.inChans, height, width], "float32", backend);
  const out = f(model.params, x) as { cls: Tensor; attention: Tensor };
  try {
    const [cls, attention] = await Promise.all([out.cls.data(), out.attention.data()]);
    const grid: [number, number] = [Math.floor(height / model.patchSize), Math.floor(width / model.patchSize)];
    return { cls: Float32Array.from(cls), attention: Float32Array.from(attention), heads: model.numHeads, grid };
  } finally {
    x.dispose();
    out.cls.dispose();
    out.attention.dispose();
  }
}

/** The head-averaged attention map, rescaled to [0, 1] for display. */
export function attentionMap(result: DemoResult): Float32Array {
  const n = result.grid[0] * result.grid[1];
  const mean = new Float32Array(n);
  for (let h = 0; h < result.heads; h++) {
    for (let i = 0; i < n; i++) mean[i] += result.attention[h * n + i] / result.heads;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of mean) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  return mean.map((v) => (hi > lo ? (v - lo) / (hi - lo) : 0));
}

/** The numbers the page prints: the first `k` values of the [CLS] token, fixed to 6 decimals. */
export function formatCls(cls: ArrayLike<number>, k = 8): string {
  return Array.from(cls).slice(0, k).map((v) => v.toFixed(6)).join(" ");
}
