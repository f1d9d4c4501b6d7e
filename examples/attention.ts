/**
 * Self-attention maps of a ViT, as in the DINO/iBOT paper figures: the last block's attention from the [CLS]
 * token to every patch, one colour per head, painted over the upscaled input image; plus a strip with the input,
 * the combined overlay and one panel per head (each panel topped by a bar in its head's colour).
 *
 * ```sh
 * deno run --unstable-webgpu --allow-read --allow-write=/tmp examples/attention.ts \
 *   --checkpoint runs/emb/checkpoint.safetensors --embedded 3 --out /tmp/attention.png
 * deno run --unstable-webgpu --allow-write=/tmp examples/attention.ts --random --embedded 3 --out /tmp/a.png
 * ```
 *
 * @module
 */
import { runCli } from "./lib/cli.ts";
import { parseArgs } from "node:util";
import { initBackend } from "../mod.ts";
import type { Backend } from "../ops/backend.ts";
import { fromTyped } from "../ops/create.ts";
import * as api from "../ops/api.ts";
import { vit, type VitConfig, type VitParams } from "../models/vit.ts";
import { normalize } from "../train/augment.ts";
import { embeddedDataset } from "../train/data/embedded.ts";
import { FMNIST_DIR, loadFashionMnist } from "../train/data/fmnist.ts";
import { decodeImage, resizeImage } from "../train/data/imagefolder.ts";
import { PRESETS } from "../train/presets.ts";
import { encodeRgba, type RgbaImage } from "./lib/png.ts";
import { type Backbone, disposeTree, loadBackbone, need, UsageError } from "./lib/model.ts";

/** The [CLS] -> patch attention of the last block: `heads` maps of `gh x gw`, each summing to at most 1. */
export interface ClsAttention {
  /** `[heads, gh, gw]` row-major. */
  maps: Float32Array;
  /** Number of heads. */
  heads: number;
  /** Patch rows. */
  gh: number;
  /** Patch columns. */
  gw: number;
  /** Patch size in image pixels. */
  patch: number;
}

/**
 * Runs the ViT on one `[C, H, W]` image (values in [0, 1]; normalised here with `mean`/`std`) and returns the
 * last block's attention of the [CLS] query over the patch keys, per head.
 */
export async function clsAttention(
  params: VitParams,
  config: Pick<VitConfig, "numHeads" | "layerNormEps">,
  image: Float32Array,
  shape: [number, number, number],
  norm: { mean: readonly number[]; std: readonly number[] },
  backend: Backend,
): Promise<ClsAttention> {
  const [C, H, W] = shape;
  const P = params.patch_embed.proj.weight.shape[2];
  const gh = Math.floor(H / P);
  const gw = Math.floor(W / P);
  const x = fromTyped(image, [1, C, H, W], "float32", backend);
  const xn = normalize(x, norm.mean, norm.std);
  const out = vit(params, xn, { numHeads: config.numHeads, layerNormEps: config.layerNormEps, returnAttention: true });
  const heads = out.attention.shape[1];
  const T = out.attention.shape[2];
  const row = api.slice(out.attention, [0, 0, 0, 1], [1, heads, 1, T]); // [1, heads, 1, N]
  const maps = Float32Array.from(await row.data());
  for (const t of [x, xn, out.tokens, out.attention, row]) t.dispose();
  return { maps, heads, gh, gw, patch: P };
}

/** Qualitative colours for the heads (matplotlib's tab10 without its grey), RGB in [0, 1]. */
const PALETTE: [number, number, number][] = [
  [0x1f, 0x77, 0xb4],
  [0xff, 0x7f, 0x0e],
  [0x2c, 0xa0, 0x2c],
  [0xd6, 0x27, 0x28],
  [0x94, 0x67, 0xbd],
  [0x17, 0xbe, 0xcf],
  [0xe3, 0x77, 0xc2],
  [0xbc, 0xbd, 0x22],
  [0x8c, 0x56, 0x4b],
].map((c) => c.map((v) => v / 255) as [number, number, number]);

/** `n` distinct colours, RGB in [0, 1]: the qualitative palette, then evenly spaced saturated hues. */
export function headColors(n: number): [number, number, number][] {
  if (n <= PALETTE.length) return PALETTE.slice(0, n);
  return Array.from({ length: n }, (_, i) => {
    const h = (i / n) * 6;
    const k = (m: number) => (m + h) % 6;
    const f = (m: number) => 1 - 0.9 * Math.max(0, Math.min(k(m), 4 - k(m), 1));
    return [f(5), f(3), f(1)];
  });
}

/** Options of `attentionOverlay` / `attentionStrip`. */
export interface OverlayOptions {
  /** Upscaling factor of the image (default: about 256 px on the longer side). */
  scale?: number;
  /** Bilinear instead of nearest-neighbour (patch-block) upsampling of the attention maps. */
  smooth?: boolean;
  /** Keep, per head, the highest-attention patches holding this fraction of the mass (DINO's `--threshold`). */
  threshold?: number;
  /** Opacity of a head's colour at full attention (default 0.8; 0.6 over thresholded masks). */
  alpha?: number;
}

/** Per-head weights in [0, 1] on the patch grid: min-max normalised, or the thresholded mass mask. */
export function headWeights(att: ClsAttention, threshold?: number): Float32Array {
  const { maps, heads, gh, gw } = att;
  const n = gh * gw;
  const out = new Float32Array(heads * n);
  for (let h = 0; h < heads; h++) {
    const m = maps.subarray(h * n, (h + 1) * n);
    const o = out.subarray(h * n, (h + 1) * n);
    if (threshold !== undefined) {
      const order = Array.from(m.keys()).sort((a, b) => m[b] - m[a]);
      const total = m.reduce((s, v) => s + v, 0);
      let acc = 0;
      for (const i of order) {
        if (acc >= threshold * total) break;
        o[i] = 1;
        acc += m[i];
      }
    } else {
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of m) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      for (let i = 0; i < n; i++) o[i] = hi > lo ? (m[i] - lo) / (hi - lo) : 0;
    }
  }
  return out;
}

/** Samples a `gh x gw` grid (covering `gh*P x gw*P` image pixels) at output pixel (x, y) of a `S`-scaled image. */
function sampler(grid: Float32Array, gh: number, gw: number, cell: number, smooth: boolean) {
  return (x: number, y: number) => {
    // (x, y) in image pixels (continuous); one grid cell spans `cell` pixels.
    if (!smooth) {
      const gx = Math.min(gw - 1, Math.max(0, Math.floor(x / cell)));
      const gy = Math.min(gh - 1, Math.max(0, Math.floor(y / cell)));
      return grid[gy * gw + gx];
    }
    const fx = Math.min(gw - 1, Math.max(0, x / cell - 0.5));
    const fy = Math.min(gh - 1, Math.max(0, y / cell - 0.5));
    const x0 = Math.floor(fx);
    const y0 = Math.floor(fy);
    const x1 = Math.min(gw - 1, x0 + 1);
    const y1 = Math.min(gh - 1, y0 + 1);
    const ax = fx - x0;
    const ay = fy - y0;
    const g = (yy: number, xx: number) => grid[yy * gw + xx];
    return (1 - ay) * ((1 - ax) * g(y0, x0) + ax * g(y0, x1)) + ay * ((1 - ax) * g(y1, x0) + ax * g(y1, x1));
  };
}

/** RGB in [0, 1] of image pixel (x, y) of a planar `[C, H, W]` image (grey when C = 1); bilinear. */
function imageSampler(image: Float32Array, C: number, H: number, W: number) {
  return (x: number, y: number): [number, number, number] => {
    const fx = Math.min(W - 1, Math.max(0, x - 0.5));
    const fy = Math.min(H - 1, Math.max(0, y - 0.5));
    const x0 = Math.floor(fx);
    const y0 = Math.floor(fy);
    const x1 = Math.min(W - 1, x0 + 1);
    const y1 = Math.min(H - 1, y0 + 1);
    const ax = fx - x0;
    const ay = fy - y0;
    const ch = (c: number) => {
      const p = image.subarray(c * H * W, (c + 1) * H * W);
      return (1 - ay) * ((1 - ax) * p[y0 * W + x0] + ax * p[y0 * W + x1]) +
        ay * ((1 - ax) * p[y1 * W + x0] + ax * p[y1 * W + x1]);
    };
    const r = ch(0);
    return C >= 3 ? [r, ch(1), ch(2)] : [r, r, r];
  };
}

const byte = (v: number) => Math.max(0, Math.min(255, Math.round(v * 255)));

function defaultScale(H: number, W: number): number {
  return Math.max(1, Math.round(256 / Math.max(H, W)));
}

/** A `[C, H, W]` image as RGBA bytes, upscaled by `scale` (bilinear). */
export function imagePanel(image: Float32Array, shape: [number, number, number], scale: number): RgbaImage {
  const [C, H, W] = shape;
  const img = imageSampler(image, C, H, W);
  const w = W * scale;
  const h = H * scale;
  const data = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [r, g, b] = img((x + 0.5) / scale, (y + 0.5) / scale);
      const o = (y * w + x) * 4;
      data[o] = byte(r);
      data[o + 1] = byte(g);
      data[o + 2] = byte(b);
      data[o + 3] = 255;
    }
  }
  return { width: w, height: h, data };
}

/**
 * Paints the heads' attention over the (desaturated, dimmed) upscaled image, one head after the other as the
 * DINO figures do: at each pixel `out = (1 - a) * out + a * colour` with `a = alpha * weight` of that head.
 * `only` draws one head. Returns RGBA of `W * scale x H * scale`.
 */
export function attentionOverlay(
  image: Float32Array,
  shape: [number, number, number],
  att: ClsAttention,
  opts: OverlayOptions & { only?: number } = {},
): RgbaImage {
  const [C, H, W] = shape;
  const scale = opts.scale ?? defaultScale(H, W);
  const alpha = opts.alpha ?? (opts.threshold === undefined ? 0.8 : 0.6);
  const { heads, gh, gw } = att;
  const cell = att.patch;
  const weights = headWeights(att, opts.threshold);
  const n = gh * gw;
  const drawn = opts.only === undefined ? [...Array(heads).keys()] : [opts.only];
  const samplers = drawn.map((h) => sampler(weights.subarray(h * n, (h + 1) * n), gh, gw, cell, !!opts.smooth));
  const colors = headColors(heads);
  const img = imageSampler(image, C, H, W);
  const w = W * scale;
  const h = H * scale;
  const data = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const ix = (x + 0.5) / scale;
      const iy = (y + 0.5) / scale;
      const [r, g, b] = img(ix, iy);
      const grey = 0.15 + 0.55 * (0.299 * r + 0.587 * g + 0.114 * b);
      const px = [grey, grey, grey];
      samplers.forEach((s, k) => {
        const a = alpha * s(ix, iy);
        const c = colors[drawn[k]];
        for (let j = 0; j < 3; j++) px[j] = (1 - a) * px[j] + a * c[j];
      });
      const o = (y * w + x) * 4;
      for (let c = 0; c < 3; c++) data[o + c] = byte(px[c]);
      data[o + 3] = 255;
    }
  }
  return { width: w, height: h, data };
}

/** Pastes panels side by side with a `gap`-pixel white border; a coloured bar above panel i when `bars[i]`. */
function strip(panels: RgbaImage[], bars: ([number, number, number] | null)[], gap = 4, bar = 6): RgbaImage {
  const h = Math.max(...panels.map((p) => p.height)) + 2 * gap + bar + 2;
  const w = panels.reduce((s, p) => s + p.width, 0) + gap * (panels.length + 1);
  const data = new Uint8ClampedArray(w * h * 4).fill(255);
  let x0 = gap;
  panels.forEach((p, i) => {
    const y0 = gap + bar + 2;
    for (let y = 0; y < p.height; y++) {
      data.set(p.data.subarray(y * p.width * 4, (y + 1) * p.width * 4), ((y0 + y) * w + x0) * 4);
    }
    const c = bars[i];
    if (c) {
      for (let y = gap; y < gap + bar; y++) {
        for (let x = x0; x < x0 + p.width; x++) {
          const o = (y * w + x) * 4;
          data[o] = byte(c[0]);
          data[o + 1] = byte(c[1]);
          data[o + 2] = byte(c[2]);
        }
      }
    }
    x0 += p.width + gap;
  });
  return { width: w, height: h, data };
}

/**
 * The input, the combined overlay (with `opts`), then one panel per head (under a bar of its colour; always the
 * continuous min-max normalised map), side by side.
 */
export function attentionStrip(
  image: Float32Array,
  shape: [number, number, number],
  att: ClsAttention,
  opts: OverlayOptions = {},
): RgbaImage {
  const scale = opts.scale ?? defaultScale(shape[1], shape[2]);
  const colors = headColors(att.heads);
  const panels = [
    imagePanel(image, shape, scale),
    attentionOverlay(image, shape, att, { ...opts, scale }),
    ...colors.map((_, h) => attentionOverlay(image, shape, att, { ...opts, threshold: undefined, scale, only: h })),
  ];
  return strip(panels, [null, null, ...colors]);
}

/** A planar `[C, H, W]` image with `C` channels converted to `channels` (luma or replication). */
export function toChannels(image: Float32Array, C: number, H: number, W: number, channels: number): Float32Array {
  if (C === channels) return image;
  const n = H * W;
  if (channels === 1 && C === 3) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = 0.299 * image[i] + 0.587 * image[n + i] + 0.114 * image[2 * n + i];
    return out;
  }
  if (channels === 3 && C === 1) {
    const out = new Float32Array(3 * n);
    out.set(image, 0);
    out.set(image, n);
    out.set(image, 2 * n);
    return out;
  }
  throw new UsageError(`cannot convert a ${C}-channel image to ${channels} channels`);
}

const USAGE = `Usage: deno run --unstable-webgpu [permissions] examples/attention.ts [options]

Writes the last block's [CLS] -> patch self-attention of a ViT as a PNG: one colour per head blended over
the upscaled input image (DINO/iBOT figures), and a strip with the input, the overlay and one panel per head.

Model (one of):
  --checkpoint FILE   a training checkpoint (checkpoint.safetensors of examples/pretrain.ts --out DIR);
                      the teacher, or the student with --student (needs --allow-read=FILE)
  --weights FILE      a safetensors file of ViT backbone parameters (official names; --heads N if needed)
  --random            a randomly initialised backbone of --preset
  --preset NAME       ${Object.keys(PRESETS).join(" | ")} (default embedded-small): architecture of
                      --random, normalisation of --weights

Image (one of):
  --image FILE        a PNG or JPEG (centre square, resized to the model's image size); needs
                      --allow-read (the file and the decoder's .wasm in Deno's cache)
  --embedded N        image N of the embedded shapes test set (default: --embedded 0)
  --fmnist N          image N of the Fashion-MNIST test set (needs --allow-read=${FMNIST_DIR})

Output:
  --out FILE          the overlay PNG (default attention.png; needs --allow-write)
  --strip FILE        the per-head strip (default: FILE with -heads before .png)
  --size N            resize --image to N px (default: the model's training size)
  --scale N           upscaling of the figures (default: ~256 px)
  --smooth            bilinear attention upsampling (default: patch blocks, as DINO)
  --threshold F       overlay: per head, the top patches holding fraction F of its attention mass, as
                      flat colour (default 0.6, as the DINO figures)
  --continuous        overlay: each head's min-max normalised attention instead of the thresholded mask
  --seed N            seed of --random (default 0)
  --backend NAME      auto | webgpu | cpu (default auto)
  -h, --help          show this help`;

async function loadImage(
  values: Record<string, string | boolean | undefined>,
  bb: Backbone,
): Promise<{ image: Float32Array; shape: [number, number, number]; label: string }> {
  const chans = bb.config.inChans;
  const sources = ["image", "embedded", "fmnist"].filter((k) => values[k] !== undefined);
  if (sources.length > 1) throw new UsageError("give at most one of --image, --embedded and --fmnist");
  const index = (name: string) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be an image index >= 0`);
    return n;
  };
  if (values.image !== undefined) {
    const path = values.image as string;
    need({ name: "read", path }, `--image ${path}`, `--allow-read=${path}`);
    const size = values.size === undefined ? bb.config.imgSize : Number(values.size);
    if (!Number.isInteger(size) || size < bb.config.patchSize) throw new UsageError(`--size must be >= the patch`);
    const bytes = await Deno.readFile(path).catch((e) => {
      throw e instanceof Deno.errors.NotFound ? new UsageError(`--image ${path}: no such file`) : e;
    });
    const img = await decodeImage(bytes).catch((e) => {
      throw new UsageError(`--image ${path}: ${(e as Error).message}`);
    });
    const image = resizeImage(img, size, chans === 1 ? 1 : 3, "crop");
    return { image, shape: [chans, size, size], label: `${path} (${img.width}x${img.height} -> ${size}px)` };
  }
  if (values.fmnist !== undefined) {
    need({ name: "read", path: FMNIST_DIR }, "--fmnist", `--allow-read=${FMNIST_DIR}`);
    const i = index("fmnist");
    const ds = await loadFashionMnist({ trainLimit: 0, testLimit: i + 1 });
    if (i >= ds.test.n) throw new UsageError(`--fmnist ${i}: the test set has ${ds.test.n} images`);
    const s = ds.size * ds.size;
    const image = toChannels(ds.test.images.slice(i * s, (i + 1) * s), 1, ds.size, ds.size, chans);
    return {
      image,
      shape: [chans, ds.size, ds.size],
      label: `Fashion-MNIST test ${i} (${ds.classNames?.[ds.test.labels[i]]})`,
    };
  }
  const i = values.embedded === undefined ? 0 : index("embedded");
  const ds = embeddedDataset({ seed: 0, trainPerClass: 0, testPerClass: Math.floor(i / 10) + 1 });
  const s = 3 * ds.size * ds.size;
  const image = toChannels(ds.test.images.slice(i * s, (i + 1) * s), 3, ds.size, ds.size, chans);
  return {
    image,
    shape: [chans, ds.size, ds.size],
    label: `embedded test ${i} (${ds.classNames?.[ds.test.labels[i]]})`,
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      weights: { type: "string" },
      random: { type: "boolean" },
      student: { type: "boolean" },
      preset: { type: "string" },
      heads: { type: "string" },
      image: { type: "string" },
      embedded: { type: "string" },
      fmnist: { type: "string" },
      out: { type: "string" },
      strip: { type: "string" },
      size: { type: "string" },
      scale: { type: "string" },
      smooth: { type: "boolean" },
      threshold: { type: "string" },
      continuous: { type: "boolean" },
      seed: { type: "string" },
      backend: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const out = values.out ?? "attention.png";
  const stripPath = values.strip ?? out.replace(/(\.png)?$/i, "-heads.png");
  need({ name: "write", path: out }, `--out ${out}`, `--allow-write=${out}`);
  need({ name: "write", path: stripPath }, `--strip ${stripPath}`, `--allow-write=${stripPath}`);
  const kind = values.backend ?? "auto";
  if (!["auto", "webgpu", "cpu"].includes(kind)) throw new UsageError("--backend must be auto, webgpu or cpu");
  const threshold = values.continuous ? undefined : Number(values.threshold ?? 0.6);
  if (threshold !== undefined && !(threshold > 0 && threshold <= 1)) throw new UsageError("--threshold in (0, 1]");
  const scale = values.scale === undefined ? undefined : Number(values.scale);
  if (scale !== undefined && !(Number.isInteger(scale) && scale >= 1 && scale <= 64)) {
    throw new UsageError("--scale must be an integer in [1, 64]");
  }
  const heads = values.heads === undefined ? undefined : Number(values.heads);
  const seed = values.seed === undefined ? 0 : Number(values.seed);

  const backend = await initBackend(kind as "auto" | "webgpu" | "cpu");
  const bb = await loadBackbone(
    {
      checkpoint: values.checkpoint,
      weights: values.weights,
      random: values.random,
      preset: values.preset,
      heads,
      seed,
      student: values.student,
    },
    backend,
  );
  const { image, shape, label } = await loadImage(values, bb);
  const att = await clsAttention(bb.params, bb.config, image, shape, bb.cfg.augment, backend);
  disposeTree(bb.params);
  const opts = { scale, smooth: values.smooth, threshold };
  const overlay = attentionOverlay(image, shape, att, opts);
  const panels = attentionStrip(image, shape, att, opts);
  await Deno.writeFile(out, await encodeRgba(overlay));
  await Deno.writeFile(stripPath, await encodeRgba(panels));
  console.log(`model: ${bb.description}`);
  console.log(`image: ${label}; ${att.heads} heads over a ${att.gh}x${att.gw} patch grid`);
  for (let h = 0; h < att.heads; h++) {
    const m = att.maps.subarray(h * att.gh * att.gw, (h + 1) * att.gh * att.gw);
    const peak = m.reduce((b, v, i) => (v > m[b] ? i : b), 0);
    const c = headColors(att.heads)[h].map((v) => byte(v).toString(16).padStart(2, "0")).join("");
    console.log(
      `  head ${h} (#${c}): attention to patches ${(100 * m.reduce((s, v) => s + v, 0)).toFixed(1)}% ` +
        `(rest on [CLS]), peak ${(100 * m[peak]).toFixed(1)}% at row ${Math.floor(peak / att.gw)}, col ${
          peak % att.gw
        }`,
    );
  }
  console.log(`wrote ${out} (${overlay.width}x${overlay.height}) and ${stripPath} (${panels.width}x${panels.height})`);
  return 0;
}

if (import.meta.main) await runCli(main, USAGE);
