/**
 * The embedded default dataset: procedurally generated 32×32 RGB images of a texture made of one motif (the
 * label: disc, ring, square, ...) tiled on a randomly rotated and shifted square lattice. Every crop of an image,
 * global or local, therefore shows whole or partial copies of its class's motif — the structure iBOT's
 * augmentations preserve — while the lattice's period, rotation and phase vary freely, so raw pixels carry
 * almost no label information (nearest class mean and pixel k-NN are near chance). The colours are nearly
 * fixed (navy ink on cream paper, ±0.03 per channel, a soft light gradient, a little pixel noise): any strong
 * per-image colour cue dominates a random ViT's [CLS] features and is what a short self-supervised run learns
 * first, instead of the motif (random colours, positions and background textures, or even random ink/paper
 * tints, left a few hundred iBOT steps at the random network's k-NN).
 *
 * Deterministic from a seed (one Threefry stream per image, so image i does not depend on the split sizes),
 * rasterised on the host with anti-aliasing from signed distance functions (coverage `clamp(½ − d)` with d in
 * pixels), about 0.1 ms per image.
 *
 * @module
 */
import type { Dataset, Split } from "./dataset.ts";
import { foldIn, HostRng, type Key, seedKey } from "../../ops/host_random.ts";

/** The ten shape classes (index = label). */
export const EMBEDDED_CLASSES = [
  "disc",
  "ring",
  "square",
  "frame",
  "triangle",
  "cross",
  "star",
  "crescent",
  "bar",
  "heart",
] as const;

/** Options of `embeddedDataset`. */
export interface EmbeddedOptions {
  /** Seed of everything (default 0). */
  seed?: number;
  /** Training images per class (default 400). */
  trainPerClass?: number;
  /** Test images per class (default 100). */
  testPerClass?: number;
  /** Image side (default 32). */
  size?: number;
}

type Vec = [number, number];

const len = (x: number, y: number) => Math.sqrt(x * x + y * y);

function sdBox(x: number, y: number, bx: number, by: number): number {
  const dx = Math.abs(x) - bx;
  const dy = Math.abs(y) - by;
  return len(Math.max(dx, 0), Math.max(dy, 0)) + Math.min(Math.max(dx, dy), 0);
}

/** Inigo Quilez's equilateral triangle of half side `r`, pointing up (y up). */
function sdTriangle(x: number, y: number, r: number): number {
  const k = Math.sqrt(3);
  let px = Math.abs(x) - r;
  let py = y + r / k;
  if (px + k * py > 0) [px, py] = [(px - k * py) / 2, (-k * px - py) / 2];
  px -= Math.min(Math.max(px, -2 * r), 0);
  return -len(px, py) * Math.sign(py);
}

/** Quilez's five-pointed star, outer radius `r`, inner ratio `rf`. */
function sdStar5(x: number, y: number, r: number, rf: number): number {
  const k1: Vec = [0.809016994375, -0.587785252292];
  const k2: Vec = [-k1[0], k1[1]];
  let px = Math.abs(x);
  let py = y;
  let d = 2 * Math.max(k1[0] * px + k1[1] * py, 0);
  px -= d * k1[0];
  py -= d * k1[1];
  d = 2 * Math.max(k2[0] * px + k2[1] * py, 0);
  px -= d * k2[0];
  py -= d * k2[1];
  px = Math.abs(px);
  py -= r;
  const ba: Vec = [rf * -k1[1] - 0, rf * k1[0] - 1];
  const h = Math.min(Math.max((px * ba[0] + py * ba[1]) / (ba[0] * ba[0] + ba[1] * ba[1]), 0), r);
  return len(px - ba[0] * h, py - ba[1] * h) * Math.sign(py * ba[0] - px * ba[1]);
}

/** Quilez's heart in unit coordinates (tip at the origin, about 1.1 tall), y up. */
function sdHeartUnit(x: number, y: number): number {
  x = Math.abs(x);
  if (y + x > 1) return len(x - 0.25, y - 0.75) - Math.SQRT2 / 4;
  const a = len(x, y - 1);
  const m = 0.5 * Math.max(x + y, 0);
  const b = len(x - m, y - m);
  return Math.min(a, b) * Math.sign(x - y);
}

/** Signed distance (pixels, negative inside) of shape `cls` with size `r` at local coordinates (x, y up). */
function sdf(cls: number, x: number, y: number, r: number): number {
  switch (cls) {
    case 0:
      return len(x, y) - r;
    case 1:
      return Math.abs(len(x, y) - 0.72 * r) - 0.28 * r;
    case 2:
      return sdBox(x, y, 0.78 * r, 0.78 * r);
    case 3:
      return Math.abs(sdBox(x, y, 0.64 * r, 0.64 * r)) - 0.2 * r;
    case 4:
      return sdTriangle(x, y + 0.2 * r, 0.95 * r);
    case 5:
      return Math.min(sdBox(x, y, r, 0.3 * r), sdBox(x, y, 0.3 * r, r));
    case 6:
      return sdStar5(x, y, 1.1 * r, 0.45);
    case 7:
      return Math.max(len(x, y) - r, -(len(x - 0.5 * r, y) - 0.78 * r));
    case 8:
      return sdBox(x, y, 1.05 * r, 0.32 * r);
    default: {
      const s = 1.7 * r;
      return sdHeartUnit(x / s, y / s + 0.55) * s;
    }
  }
}

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/** A fast per-pixel noise source (mulberry32) seeded from the image's Threefry stream: uint32 values. */
function pixelNoise(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Renders one `size × size` RGB image of class `cls` into `out` (planar [3, size, size]). */
function render(out: Float32Array, cls: number, size: number, rng: HostRng): void {
  const n = size * size;
  const bits = pixelNoise(rng.bits());
  // Navy ink on cream paper, each channel jittered by ±0.03.
  const bg = [0.93, 0.9, 0.8].map((v) => v + rng.uniformIn(-0.03, 0.03));
  const fg = [0.12, 0.14, 0.3].map((v) => v + rng.uniformIn(-0.03, 0.03));
  const shade = rng.uniformIn(-0.15, 0.15); // a soft light gradient across each motif
  // The lattice: period p (2–3 motifs across the image), rotation, phase; motif size r = 0.36 p, so every
  // motif (within 1.25 r of its centre) stays inside its cell.
  const p = rng.uniformIn(10, 14) * (size / 32);
  const r = 0.36 * p;
  const rot = rng.uniformIn(0, 2 * Math.PI);
  const [rc, rs] = [Math.cos(rot), Math.sin(rot)];
  const ox = rng.uniformIn(0, p);
  const oy = rng.uniformIn(0, p);
  const noise = rng.uniformIn(0, 0.06) / 1024;
  for (let py = 0, i = 0; py < size; py++) {
    for (let px = 0; px < size; px++, i++) {
      const dx = px + 0.5 - ox;
      const dy = py + 0.5 - oy;
      // Rotate into the lattice's frame (flip y so that "up" is up), then wrap into the cell around the origin.
      let lx = dx * rc + dy * rs;
      let ly = dx * rs - dy * rc;
      lx -= p * Math.round(lx / p);
      ly -= p * Math.round(ly / p);
      const cover = clamp01(0.5 - sdf(cls, lx, ly, r));
      const lit = 1 + shade * (lx / r);
      const w = bits();
      for (let c = 0; c < 3; c++) {
        const v = bg[c] + (clamp01(fg[c] * lit) - bg[c]) * cover;
        // Colour noise: three 10-bit values of one draw, centred.
        out[c * n + i] = clamp01(v + noise * (((w >>> (10 * c)) & 1023) - 511.5));
      }
    }
  }
}

function makeSplit(key: Key, perClass: number, classes: number, size: number): Split {
  const n = perClass * classes;
  const per = 3 * size * size;
  const images = new Float32Array(n * per);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    // Class-interleaved order: every prefix is (nearly) balanced.
    labels[i] = i % classes;
    render(images.subarray(i * per, (i + 1) * per), labels[i], size, new HostRng(foldIn(key, i)));
  }
  return { images, labels, n };
}

/**
 * The embedded motif-texture dataset: 10 classes (`EMBEDDED_CLASSES`, the motifs) of `size`-px RGB images, `trainPerClass` and
 * `testPerClass` images per class, labels interleaved (`label = i mod 10`). Train and test come from
 * independent streams of the seed.
 *
 * @example
 * ```ts
 * import { data } from "./mod.ts";
 * const ds = data.embeddedDataset({ seed: 1, trainPerClass: 50, testPerClass: 10 });
 * console.log(ds.train.images.length); // 500 * 3 * 32 * 32
 * ```
 */
export function embeddedDataset(opts: EmbeddedOptions = {}): Dataset {
  const { seed = 0, trainPerClass = 400, testPerClass = 100, size = 32 } = opts;
  for (const [k, v] of [["trainPerClass", trainPerClass], ["testPerClass", testPerClass]] as const) {
    if (!(Number.isInteger(v) && v >= 0)) throw new RangeError(`embeddedDataset: ${k} = ${v}`);
  }
  if (!(Number.isInteger(size) && size >= 8)) throw new RangeError(`embeddedDataset: size = ${size} (need ≥ 8)`);
  const key = seedKey(seed);
  const classes = EMBEDDED_CLASSES.length;
  return {
    name: `embedded-shapes-${size}`,
    numClasses: classes,
    channels: 3,
    size,
    classNames: EMBEDDED_CLASSES,
    train: makeSplit(foldIn(key, 1), trainPerClass, classes, size),
    test: makeSplit(foldIn(key, 2), testPerClass, classes, size),
  };
}
