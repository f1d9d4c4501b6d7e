/**
 * iBOT's masked-image-modelling masks sampled on the host as the official data loader does (spec §5): per crop
 * and image a prediction ratio (0 with probability ½, else U(0.1, 0.5) in the released recipes), then a
 * BEiT-style `block` mask with iBOT's minimum block area, or a `rand` mask of exactly ⌊ratio·N⌋ cells. Every
 * draw comes from a `HostRng` stream (`host_random.ts`), so a mask is a deterministic function of its key.
 *
 * @module
 */
import { foldIn, HostRng, type Key, pyRound } from "../ops/host_random.ts";

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
  key: Key,
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
    const rng = new HostRng(foldIn(key, positions ? positions[b] : b));
    out.set(sampleMask(rng, gh, gw, opts), b * gh * gw);
  }
  return out;
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
