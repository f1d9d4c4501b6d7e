/**
 * The jitted training step of `pretrain`, over a whole batch or accumulated over micro-batches: one fused
 * `ibotStep` plan when the micro-batch is the batch, else a `ibotGrads` plan run once per micro-batch (each
 * with its images' positions in the batch, so that augmentation, masks and drop path are those of the whole
 * batch), an `addIbotSums` plan that accumulates in place, and one `ibotUpdate` plan. The sums are the point
 * where a data-parallel run all-reduces (see train/step.ts): with a `shard`, each process runs the gradient
 * plan on its own positions of the batch only, and `reduce` (an all-reduce) adds every process's sums before
 * the update, which every process then runs identically.
 */
import type { Tensor } from "../ops/tensor.ts";
import { jit } from "../autograd/jit.ts";
import { leaves } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import type { PlanMemory } from "../autograd/memory.ts";
import { fromTyped } from "../ops/create.ts";
import type { StepMasks } from "./masking.ts";
import type { HostBatch } from "./data/loader.ts";
import {
  addIbotSums,
  type IbotBatch,
  ibotGrads,
  type IbotHyper,
  type IbotMetrics,
  type IbotState,
  ibotStep,
  type IbotStepConfig,
  type IbotSums,
  ibotUpdate,
} from "./step.ts";

/** A compiled training step as `pretrain` drives it. */
export interface PretrainStep<S> {
  /** Whether the batch is split into micro-batches (then `run` uploads them itself, one at a time). */
  readonly micro: boolean;
  /**
   * One step on a host batch (`data`: the whole batch uploaded, or undefined with micro-batches, which `run`
   * uploads). `masks(positions)` gives the masks of the images at those positions of the batch; `run` frees
   * what it uploads, the batch's `data` and the masks. The state is donated.
   */
  run(
    state: S,
    batch: HostBatch & { data: Tensor | undefined },
    hp: IbotHyper,
    masks: (positions: Int32Array) => StepMasks,
  ): Promise<{ state: S; metrics: IbotMetrics }>;
  /** Plan statistics of the main plan (the fused step, or the gradient plan). */
  stats(): unknown;
  /**
   * The memory of the main plan (the fused step, or the gradient plan of one micro-batch: `batch` then holds one
   * micro-batch and its `index`), planned without allocating (arguments may be placeholders); throws a
   * `PlanMemoryError` when it cannot fit.
   */
  memory(state: S, batch: IbotBatch, hp: IbotHyper): PlanMemory;
  /** Frees the compiled plans. */
  dispose(): void;
}

/** Options of `accumulatingStep`. */
export interface AccumulateOptions {
  /** Images per step. */
  batchSize: number;
  /** Images per forward/backward pass; must divide `batchSize`. */
  microBatch: number;
  /** Backend the micro-batches are uploaded to. */
  backend: Backend;
  /**
   * This process's share of every batch in a data-parallel run: the images at positions `rank`, `rank + size`,
   * `rank + 2·size`, ... (DistributedSampler's split of one shared order); `microBatch` must divide the
   * `batchSize / size` images of a share. Default: the whole batch.
   */
  shard?: { rank: number; size: number };
  /** Adds the sums of every process (an all-reduce); called once per step, before the update. */
  reduce?: <T>(sums: T) => Promise<T>;
  /** Most bytes a plan may hold at its peak (`jit`'s `maxMemory`). */
  maxMemory?: number;
}

function disposeTree(tree: unknown): void {
  for (const t of leaves<Tensor | null>(tree)) t?.dispose();
}

function freeMasks(m: StepMasks): void {
  [...m.masks, m.maskSelection.index, m.maskSelection.weight].forEach((t) => t.dispose());
}

/**
 * Compiles the training step of `cfg` for a batch of `batchSize` processed `microBatch` images at a time.
 * Throws a RangeError naming both sizes when `microBatch` does not divide `batchSize`.
 *
 * @example
 * ```ts ignore
 * const step = accumulatingStep(stepConfig, { batchSize: 64, microBatch: 16, backend });
 * const { state: next, metrics } = step.run(state, hostBatch, hp, (pos) => sampleStepMasks(key, pos.length, grids, {}, backend, pos));
 * ```
 */
export function accumulatingStep<B, H>(
  cfg: IbotStepConfig<B, H>,
  opts: AccumulateOptions,
): PretrainStep<IbotState<B, H>> {
  const { batchSize, microBatch, backend, maxMemory, shard = { rank: 0, size: 1 } } = opts;
  if (!(Number.isInteger(shard.size) && shard.size > 0 && batchSize % shard.size === 0)) {
    throw new RangeError(`the batch size ${batchSize} does not split over ${shard.size} processes`);
  }
  const share = batchSize / shard.size;
  if (!(Number.isInteger(microBatch) && microBatch > 0 && share % microBatch === 0)) {
    const split = shard.size > 1 ? ` split over ${shard.size} processes (${share} images each)` : "";
    throw new RangeError(
      `the micro-batch ${microBatch} must be a positive divisor of the batch size ${batchSize}${split}`,
    );
  }
  type S = IbotState<B, H>;
  const all = Int32Array.from({ length: batchSize }, (_, i) => i);
  // This process's positions in the batch: every size-th from its rank.
  const mine = Int32Array.from({ length: share }, (_, i) => shard.rank + i * shard.size);
  const distributed = shard.size > 1 || opts.reduce !== undefined;
  if (microBatch === batchSize && !distributed) {
    const step = jit(ibotStep(cfg), { donate: [0], maxMemory });
    return {
      micro: false,
      run(state, batch, hp, masks) {
        const m = masks(all);
        const out = step(state, { images: batch.data!, masks: m.masks, maskSelection: m.maskSelection }, hp);
        batch.data!.dispose();
        freeMasks(m);
        return Promise.resolve(out);
      },
      stats: () => step.stats().plan,
      memory: (state, batch, hp) => step.memory(state, batch, hp),
      dispose: () => step.dispose(),
    };
  }
  const grads = jit(ibotGrads(cfg), { maxMemory });
  const add = jit(addIbotSums<IbotSums<B, H>>, { donate: [0, 1], maxMemory });
  const update = jit(ibotUpdate<B, H>(cfg), { donate: [0, 1], maxMemory });
  return {
    micro: true,
    async run(state: S, batch, hp, masks) {
      batch.data?.dispose();
      const [, c, h, w] = batch.shape;
      const per = c * h * w;
      let sums: IbotSums<B, H> | null = null;
      for (let first = 0; first < share; first += microBatch) {
        const positions = mine.subarray(first, first + microBatch);
        const pixels = new Float32Array(microBatch * per);
        positions.forEach((p, i) => pixels.set(batch.images.subarray(p * per, (p + 1) * per), i * per));
        const images = fromTyped(pixels, [microBatch, c, h, w], "float32", backend);
        const index = fromTyped(positions, [microBatch], "int32", backend);
        const m = masks(positions);
        const part: IbotBatch = { images, masks: m.masks, maskSelection: m.maskSelection, index };
        const g = grads(state, part, hp);
        sums = sums ? add(sums, g) : g;
        [images, index].forEach((t) => t.dispose());
        freeMasks(m);
      }
      if (opts.reduce) {
        const local = sums!;
        sums = await opts.reduce(local);
        disposeTree(local);
      }
      return update(state, sums!, hp);
    },
    stats: () => grads.stats().plan,
    memory: (state, batch, hp) => grads.memory(state, batch, hp),
    dispose: () => [grads, add, update].forEach((f) => f.dispose()),
  };
}
