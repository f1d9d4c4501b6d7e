/**
 * iBOT's masked-image-modelling masks (spec §5): per crop and image a prediction ratio (0 with probability ½,
 * else U(0.1, 0.5) in the released recipes), then a BEiT-style `block` mask with iBOT's minimum block area,
 * or a `rand` mask of exactly ⌊ratio·N⌋ cells.
 *
 * Design choice: masks are small and data-dependent (a rejection loop), so they are generated on the host,
 * per batch, like the official data loader does, and uploaded as bool tensors `[B, Gh, Gw]`. Randomness comes
 * from a host-side Threefry-2x32 stream keyed like the device PRNG: `hostKey(seed)`, `hostSplit` and
 * `hostFoldIn` give exactly the keys of `random.key`, `random.split` and `random.foldIn`, and the n-th draw of
 * `HostRng(k).uniform()` equals element n of `random.uniform(k, [..])`. Everything is a deterministic function
 * of the key; no device reads are needed when the data pipeline keeps its key on the host.
 */
import type { Tensor } from "../ops/tensor.ts";
import { fromHost } from "../ops/engine.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import { threefry2x32 } from "../ops/rules_random.ts";

/** Host keys mirror the device PRNG; they are defined once, in the data pipeline's stream module. */
export { foldIn as hostFoldIn, type Key as HostKey, seedKey as hostKey } from "./data/rng.ts";
import { foldIn as hostFoldIn, type Key as HostKey } from "./data/rng.ts";

/**
 * Reads a device key (uint32[2]) to the host (one readback).
 *
 * @example
 * ```ts
 * import { masking, random } from "./mod.ts";
 * console.log(await masking.readKey(random.key(7))); // [0, 7]
 * ```
 */
export async function readKey(key: Tensor): Promise<HostKey> {
  if (key.dtype !== "uint32" || key.size !== 2) throw new TypeError(`readKey: expected a uint32[2] key, got ${key}`);
  const d = await key.data();
  return [d[0] >>> 0, d[1] >>> 0];
}

/**
 * The keys of `random.split(key, n)`, on the host.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const [k1, k2] = masking.hostSplit(masking.hostKey(0)); // the keys of random.split(random.key(0))
 * ```
 */
export function hostSplit(key: HostKey, n = 2): HostKey[] {
  return Array.from({ length: n }, (_, i) => [
    threefry2x32(key[0], key[1], 2 * i, 0)[0],
    threefry2x32(key[0], key[1], 2 * i + 1, 0)[0],
  ]);
}

/**
 * A host stream of random numbers from a key: draw n is `threefry(key, (n, 0))[0]`, i.e. element n of
 * `random.randomBits(key, [..])`; `uniform()` uses its top 24 bits exactly as `random.uniform`.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const rng = new masking.HostRng(masking.hostKey(0));
 * const u = rng.uniform(); // in [0, 1)
 * const die = rng.randint(1, 6); // in 1..6
 * ```
 */
export class HostRng {
  private counter = 0;
  /** A stream at draw 0 of `key`. */
  constructor(readonly key: HostKey) {}

  /** The next raw uint32. */
  bits(): number {
    if (this.counter >= 2 ** 32) throw new RangeError("HostRng: stream exhausted (2^32 draws)");
    return threefry2x32(this.key[0], this.key[1], this.counter++, 0)[0];
  }

  /** Uniform in [0, 1) with 24 random bits. */
  uniform(): number {
    return (this.bits() >>> 8) * 2 ** -24;
  }

  /** Python's `random.uniform(a, b)`: `a + (b − a)·u` (also when b < a). */
  uniformIn(a: number, b: number): number {
    return a + (b - a) * this.uniform();
  }

  /** Python's `random.randint(a, b)`: an integer in [a, b], both inclusive. */
  randint(a: number, b: number): number {
    return Math.min(a + Math.floor(this.uniform() * (b - a + 1)), b);
  }
}

/**
 * Python's `round`: to the nearest integer, ties to even.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * console.log(masking.pyRound(2.5), masking.pyRound(3.5), masking.pyRound(2.6)); // 2 4 3
 * ```
 */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Mask generation options (defaults: the released recipes). */
export interface MaskOptions {
  /** `block` (default) or `rand`. */
  shape?: "block" | "rand";
  /** Mean prediction ratio(s) (`--pred_ratio`), default `[0, 0.3]`. */
  predRatio?: number | readonly number[];
  /** Half-width(s) of the uniform ratio draw (`--pred_ratio_var`): `[0, 0.2]` with the default ratio, else 0s. */
  predRatioVar?: number | readonly number[];
  /** Block aspect-ratio range, default `[0.3, 1/0.3]` (drawn log-uniformly). */
  aspectRatio?: readonly [number, number];
  /** Attempts per block, default 10. */
  maxAttempts?: number;
  /** Masks are all false while `epoch < predStartEpoch` (default 0). */
  predStartEpoch?: number;
  /** The current epoch (default 0), compared with `predStartEpoch`. */
  epoch?: number;
}

/** The (mean, half-width) pairs of the prediction ratio, with the official defaults filled in. */
function ratioPairs(opts: MaskOptions): { rs: number[]; vs: number[] } {
  const ratio = opts.predRatio ?? [0, 0.3];
  const rvar = opts.predRatioVar ??
    (opts.predRatio === undefined ? [0, 0.2] : typeof ratio === "number" ? 0 : ratio.map(() => 0));
  const rs = typeof ratio === "number" ? [ratio] : [...ratio];
  const vs = typeof rvar === "number" ? [rvar] : [...rvar];
  if (rs.length !== vs.length || rs.length === 0) {
    throw new RangeError(`samplePredRatio: predRatio and predRatioVar must have the same (non-zero) length`);
  }
  return { rs, vs };
}

/**
 * One crop's prediction ratio (official `get_pred_ratio`): 0 while `epoch < predStartEpoch`; for a scalar
 * `r`, `v`: `U(r − v, r + v)` (or `r` when v = 0); for lists, one such draw per pair, then one of them
 * uniformly. With the defaults: 0 with probability ½, else U(0.1, 0.5).
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const ratio = masking.samplePredRatio(new masking.HostRng(masking.hostKey(0))); // 0, or in [0.1, 0.5)
 * ```
 */
export function samplePredRatio(rng: HostRng, opts: MaskOptions = {}): number {
  if ((opts.epoch ?? 0) < (opts.predStartEpoch ?? 0)) return 0;
  const { rs, vs } = ratioPairs(opts);
  const draws = rs.map((r, i) => {
    const v = vs[i];
    if (!(r >= v && v >= 0)) throw new RangeError(`samplePredRatio: need predRatio ≥ predRatioVar ≥ 0, got ${r}, ${v}`);
    return v > 0 ? rng.uniformIn(r - v, r + v) : r;
  });
  if (typeof opts.predRatio === "number") return draws[0]; // a scalar ratio takes no pick from the stream
  return draws[Math.min(Math.floor(rng.uniform() * draws.length), draws.length - 1)];
}

/** One placed block, as reported to `BlockOptions.onBlock`. */
export interface BlockRecord {
  /** First row. */
  top: number;
  /** First column. */
  left: number;
  /** Rows. */
  h: number;
  /** Columns. */
  w: number;
  /** The drawn target area (uniform between the minimum area and the remaining count). */
  target: number;
  /** The drawn aspect ratio (h/w before rounding). */
  aspect: number;
  /** `high − count` when the block was drawn. */
  remaining: number;
  /** Cells that were newly masked. */
  added: number;
}

/** Options of `blockMask`. */
export interface BlockOptions {
  /** Aspect-ratio range, default `[0.3, 1/0.3]`. */
  aspectRatio?: readonly [number, number];
  /** Attempts per block, default 10. */
  maxAttempts?: number;
  /** Called for every placed block (for tests and debugging). */
  onBlock?: (b: BlockRecord) => void;
}

/**
 * The minimum block area of iBOT's block masking: `(min(Gh, Gw) // 3)²`.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * console.log(masking.minBlockArea(14, 14)); // 16
 * ```
 */
export function minBlockArea(gh: number, gw: number): number {
  return Math.floor(Math.min(gh, gw) / 3) ** 2;
}

/**
 * A BEiT-style block mask with iBOT's rules (spec §5.3), row-major `Gh·Gw` bytes (1 = masked). While
 * `count < high`: up to `maxAttempts` attempts, each drawing a target area `U(low, high − count)` with
 * `low = (min(Gh,Gw)//3)²`, an aspect ratio `exp(U(ln a0, ln a1))`, `h = round(√(area·aspect))`,
 * `w = round(√(area/aspect))`; if `h < Gh` and `w < Gw`, a uniform position; the rectangle is accepted when it
 * adds between 1 and `high − count` new cells. Stops when no attempt adds anything. The count never exceeds
 * ⌊high⌋ and may fall short of it.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const mask = masking.blockMask(new masking.HostRng(masking.hostKey(0)), 14, 14, 0.3 * 196);
 * console.log(mask.length, mask.reduce((a, b) => a + b, 0) <= 58); // 196 true
 * ```
 */
export function blockMask(rng: HostRng, gh: number, gw: number, high: number, opts: BlockOptions = {}): Uint8Array {
  const [a0, a1] = opts.aspectRatio ?? [0.3, 1 / 0.3];
  const logLo = Math.log(a0);
  const logHi = Math.log(a1);
  const attempts = opts.maxAttempts ?? 10;
  const low = minBlockArea(gh, gw);
  const mask = new Uint8Array(gh * gw);
  let count = 0;
  while (count < high) {
    const remaining = high - count;
    let delta = 0;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const target = rng.uniformIn(low, remaining);
      const aspect = Math.exp(rng.uniformIn(logLo, logHi));
      const h = pyRound(Math.sqrt(target * aspect));
      const w = pyRound(Math.sqrt(target / aspect));
      if (w < gw && h < gh) {
        const top = rng.randint(0, gh - h);
        const left = rng.randint(0, gw - w);
        let already = 0;
        for (let i = top; i < top + h; i++) for (let j = left; j < left + w; j++) already += mask[i * gw + j];
        const fresh = h * w - already;
        if (fresh > 0 && fresh <= remaining) {
          for (let i = top; i < top + h; i++) {
            for (let j = left; j < left + w; j++) {
              if (!mask[i * gw + j]) {
                mask[i * gw + j] = 1;
                delta++;
              }
            }
          }
          opts.onBlock?.({ top, left, h, w, target, aspect, remaining, added: fresh });
        }
      }
      if (delta > 0) break;
    }
    if (delta === 0) break;
    count += delta;
  }
  return mask;
}

/**
 * A `rand` mask (spec §5.4): exactly ⌊high⌋ cells, a uniform shuffle (Fisher–Yates) of a 0/1 vector.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const mask = masking.randMask(new masking.HostRng(masking.hostKey(0)), 4, 4, 5);
 * console.log(mask.reduce((a, b) => a + b, 0)); // 5
 * ```
 */
export function randMask(rng: HostRng, gh: number, gw: number, high: number): Uint8Array {
  const n = gh * gw;
  const k = Math.min(Math.floor(high), n);
  const mask = new Uint8Array(n);
  mask.fill(1, n - k);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.randint(0, i);
    const t = mask[i];
    mask[i] = mask[j];
    mask[j] = t;
  }
  return mask;
}

/**
 * One image's mask for one crop: draws the ratio, then the mask (`high = ratio·Gh·Gw`).
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const rng = new masking.HostRng(masking.hostKey(0));
 * const mask = masking.sampleMask(rng, 14, 14, { shape: "rand", predRatio: 0.5, predRatioVar: 0 });
 * console.log(mask.reduce((a, b) => a + b, 0)); // 98
 * ```
 */
export function sampleMask(rng: HostRng, gh: number, gw: number, opts: MaskOptions = {}): Uint8Array {
  const ratio = samplePredRatio(rng, opts);
  const high = ratio * gh * gw;
  if ((opts.shape ?? "block") === "rand") return randMask(rng, gh, gw, high);
  if (opts.shape !== undefined && opts.shape !== "block") {
    throw new TypeError(`sampleMask: unknown shape ${opts.shape}`);
  }
  return blockMask(rng, gh, gw, high, { aspectRatio: opts.aspectRatio, maxAttempts: opts.maxAttempts });
}

/**
 * Host masks of a batch: row-major `[B, Gh, Gw]` bytes; image b uses the stream of `hostFoldIn(key, b)`, or of
 * `hostFoldIn(key, positions[b])` when the batch is part (e.g. a micro-batch) of a larger one.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * console.log(masking.sampleMasksHost(masking.hostKey(0), 8, 14, 14).length); // 8 · 14 · 14 = 1568
 * ```
 */
export function sampleMasksHost(
  key: HostKey,
  batch: number,
  gh: number,
  gw: number,
  opts: MaskOptions = {},
  positions?: ArrayLike<number>,
): Uint8Array {
  if (!(Number.isInteger(batch) && batch >= 0 && Number.isInteger(gh) && gh > 0 && Number.isInteger(gw) && gw > 0)) {
    throw new RangeError(`sampleMasks: bad batch/grid ${batch}, ${gh}×${gw}`);
  }
  if (positions && positions.length !== batch) {
    throw new RangeError(`sampleMasks: ${positions.length} image positions for a batch of ${batch}`);
  }
  const out = new Uint8Array(batch * gh * gw);
  for (let b = 0; b < batch; b++) {
    const rng = new HostRng(hostFoldIn(key, positions ? positions[b] : b));
    out.set(sampleMask(rng, gh, gw, opts), b * gh * gw);
  }
  return out;
}

/**
 * Bool masks `[B, Gh, Gw]` (true = masked) for one crop of a batch, on `backend` (default backend otherwise).
 *
 * @example
 * ```ts
 * import { hostKey, sampleMasks } from "./train/masking.ts";
 * const m = sampleMasks(hostKey(0), 4, 4, 4, { epoch: 0 }); // bool [4, 4, 4]
 * ```
 */
export function sampleMasks(
  key: HostKey,
  batch: number,
  gh: number,
  gw: number,
  opts: MaskOptions = {},
  backend?: Backend,
): Tensor {
  return fromHost(backend ?? defaultBackend(), sampleMasksHost(key, batch, gh, gw, opts), [batch, gh, gw], "bool");
}

/**
 * Masks for several crops (e.g. the global crops): crop c uses `hostFoldIn(key, c)`.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const [m1, m2] = masking.sampleCropMasks(masking.hostKey(0), 8, [[14, 14], [14, 14]]);
 * console.log(m1.dtype, m1.shape); // bool [8, 14, 14]
 * ```
 */
export function sampleCropMasks(
  key: HostKey,
  batch: number,
  grids: readonly (readonly [number, number])[],
  opts: MaskOptions = {},
  backend?: Backend,
): Tensor[] {
  return grids.map(([gh, gw], c) => sampleMasks(hostFoldIn(key, c), batch, gh, gw, opts, backend));
}

/** The masked positions of a batch's global crops, for the sparse MIM loss (`IbotBatch.maskSelection`). */
export interface HostMaskSelection {
  /**
   * Token row of each selected patch among the `[crops·B·(L + N)]` rows of the crops' tokens (crop-major, then
   * image, then token; L leading tokens such as CLS come before each image's N patches); 0 pads.
   */
  index: Int32Array;
  /** 1/max(#masked patches of the row's image-crop, 1) per selected row; 0 on padding rows. */
  weight: Float32Array;
  /** Selected (masked) patches before padding. */
  count: number;
}

/**
 * Lists the masked patches of host masks (one `[B, N]`-sized mask per global crop, in crop order), padded to
 * `capacity` rows with index 0 and weight 0, as rows of the tokens with `leadingTokens` (e.g. 1 for CLS) before
 * each image's patches. Throws when more patches are masked than `capacity` holds.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * // two crops of two images with two patches each
 * const sel = masking.maskSelection([Uint8Array.of(1, 1, 0, 1), Uint8Array.of(0, 0, 1, 0)], 2, 5);
 * console.log([...sel.index], [...sel.weight], sel.count); // [0, 1, 3, 6, 0] [0.5, 0.5, 1, 1, 0] 4
 * ```
 */
export function maskSelection(
  masks: readonly Uint8Array[],
  batch: number,
  capacity: number,
  leadingTokens = 0,
): HostMaskSelection {
  const n = masks.length > 0 ? masks[0].length / batch : 0;
  const index = new Int32Array(capacity);
  const weight = new Float32Array(capacity);
  let count = 0;
  masks.forEach((mask, c) => {
    if (mask.length !== batch * n) {
      throw new RangeError(`maskSelection: mask ${c} has ${mask.length} cells, expected ${batch * n}`);
    }
    for (let b = 0; b < batch; b++) {
      let masked = 0;
      for (let p = 0; p < n; p++) masked += mask[b * n + p] ? 1 : 0;
      if (count + masked > capacity) {
        throw new RangeError(`maskSelection: more than ${capacity} masked patches (the capacity); pass a larger one`);
      }
      for (let p = 0; p < n; p++) {
        if (!mask[b * n + p]) continue;
        index[count] = (c * batch + b) * (leadingTokens + n) + leadingTokens + p;
        weight[count++] = 1 / masked;
      }
    }
  });
  return { index, weight, count };
}

/**
 * Row capacities for `maskSelection` over `crops` global crops of `batch` images with `n` patches each:
 * `max`, the most patches the masking options can ever mask (every crop at its highest ratio), and `typical`,
 * the mean plus six standard deviations of the per-crop upper bound `floor(ratio·n)` summed over the crops,
 * rounded up to a multiple of 64 — a batch above it is so unlikely that a second plan for `max` suffices.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * console.log(masking.maskCapacity(256, 49)); // { typical: 2624, max: 6144 }
 * ```
 */
export function maskCapacity(rows: number, n: number, opts: MaskOptions = {}): { typical: number; max: number } {
  const { rs, vs } = ratioPairs(opts);
  // The ratio is one of the pairs, uniformly, then U(r − v, r + v): integrate floor(ratio·n) numerically.
  const steps = 4096;
  let mean = 0;
  let square = 0;
  let highest = 0;
  rs.forEach((r, i) => {
    const v = vs[i] ?? 0;
    for (let s = 0; s < steps; s++) {
      const x = v > 0 ? r - v + (2 * v * (s + 0.5)) / steps : r;
      const cells = Math.min(n, Math.floor(x * n));
      mean += cells / (steps * rs.length);
      square += (cells * cells) / (steps * rs.length);
      highest = Math.max(highest, Math.min(n, Math.floor((r + v) * n)));
    }
  });
  const max = rows * highest;
  const sd = Math.sqrt(Math.max(square - mean * mean, 0));
  const typical = Math.min(max, Math.ceil((rows * mean + 6 * Math.sqrt(rows) * sd + 1) / 64) * 64);
  return { typical: Math.max(typical, Math.min(max, 64)), max: Math.max(max, 1) };
}

/** The masks of one training step: bool masks per global crop and their masked token rows. */
export interface StepMasks {
  /** Bool `[B, Gh, Gw]` per global crop (true = masked). */
  masks: Tensor[];
  /** The masked patches as token rows (one leading CLS token per image), for `IbotBatch.maskSelection`. */
  maskSelection: { index: Tensor; weight: Tensor };
  /** Masked patches in the batch. */
  count: number;
}

/**
 * Samples the masks of one step as `sampleCropMasks` does (crop c from `hostFoldIn(key, c)`, equal grids), and
 * lists their masked patches for the sparse MIM loss, padded to `maskCapacity(...).typical` rows (or to `max`
 * in the rare batch that needs more, which compiles a second plan). For a part of a step's batch (a
 * micro-batch, a rank's share), `positions` gives its images' positions in the whole batch: each image gets the
 * mask it gets there.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const m = masking.sampleStepMasks(masking.hostKey(0), 8, [[7, 7], [7, 7]]);
 * console.log(m.masks.length, m.maskSelection.index.shape); // 2 [ 320 ]
 * ```
 */
export function sampleStepMasks(
  key: HostKey,
  batch: number,
  grids: readonly (readonly [number, number])[],
  opts: MaskOptions = {},
  backend?: Backend,
  positions?: ArrayLike<number>,
): StepMasks {
  const b = backend ?? defaultBackend();
  const n = grids.length > 0 ? grids[0][0] * grids[0][1] : 0;
  if (grids.some(([gh, gw]) => gh * gw !== n)) throw new RangeError("sampleStepMasks: the global crops' grids differ");
  const host = grids.map(([gh, gw], c) => sampleMasksHost(hostFoldIn(key, c), batch, gh, gw, opts, positions));
  const cap = maskCapacity(grids.length * batch, n, opts);
  const masked = host.reduce((a, m) => a + m.reduce((s, x) => s + x, 0), 0);
  const sel = maskSelection(host, batch, masked <= cap.typical ? cap.typical : cap.max, 1);
  return {
    masks: host.map((m, c) => fromHost(b, m, [batch, grids[c][0], grids[c][1]], "bool")),
    maskSelection: {
      index: fromHost(b, sel.index, [sel.index.length], "int32"),
      weight: fromHost(b, sel.weight, [sel.weight.length], "float32"),
    },
    count: sel.count,
  };
}
