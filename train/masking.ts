/**
 * iBOT's masked-image-modelling masks on the device (spec §5): the host-sampled masks (`masking_host.ts`) of a
 * batch uploaded as bool tensors `[B, Gh, Gw]`, and the masked patches listed as token rows for the sparse MIM
 * loss.
 *
 * Design choice: masks are small and data-dependent (a rejection loop), so they are generated on the host,
 * per batch, like the official data loader does. Randomness comes from a host-side Threefry-2x32 stream keyed
 * like the device PRNG: `hostKey(seed)`, `hostSplit` and `hostFoldIn` give exactly the keys of `random.key`,
 * `random.split` and `random.foldIn`, and the n-th draw of `HostRng(k).uniform()` equals element n of
 * `random.uniform(k, [..])`. Everything is a deterministic function of the key; no device reads are needed
 * when the data pipeline keeps its key on the host.
 *
 * @module
 */
import type { Tensor } from "../ops/tensor.ts";
import { fromHost } from "../ops/engine.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import { foldIn as hostFoldIn, type Key as HostKey } from "../ops/host_random.ts";
import { maskCapacity, type MaskOptions, sampleMasksHost } from "./masking_host.ts";

/** The host PRNG under the names masks have always used (one module: `host_random.ts`). */
export {
  foldIn as hostFoldIn,
  HostRng,
  type Key as HostKey,
  pyRound,
  readKey,
  seedKey as hostKey,
  split as hostSplit,
} from "../ops/host_random.ts";
export * from "./masking_host.ts";

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
