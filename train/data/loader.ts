/**
 * A prefetching batch loader over a `Dataset` split. Each epoch is shuffled by a host-side Threefry
 * permutation of `(seed, epoch)` (exactly `random.permutation(random.foldIn(random.key(seed), epoch), n)`), so
 * the batch at `(epoch, step)` is a pure function of the seed: training resumes exactly by restarting the
 * loader at the saved position. One batch is kept in flight: while the consumer runs step k, batch k + 1 is
 * assembled on the host and handed to the optional `upload` hook (e.g. `fromTyped(..., gpu)`).
 *
 * @module
 */
import type { Dataset, Split } from "./dataset.ts";
import { imageSize } from "./dataset.ts";
import { foldIn, permutation, seedKey } from "../../ops/host_random.ts";

/** A position in the stream of batches: the next batch to produce. */
export interface Position {
  epoch: number;
  step: number;
}

/** A batch on the host. */
export interface HostBatch {
  epoch: number;
  step: number;
  /** `epoch · stepsPerEpoch + step` (the schedules' iteration counter). */
  iteration: number;
  /** Where to resume after this batch (save it with a checkpoint taken after this step). */
  next: Position;
  /** `[B, C, H, W]` */
  shape: [number, number, number, number];
  images: Float32Array;
  labels: Int32Array;
  /** Dataset indices of the batch's images. */
  indices: Int32Array;
}

/** A batch with what `upload` made of it. */
export interface Batch<U = undefined> extends HostBatch {
  /** The `upload` hook's result (undefined without one). */
  data: U;
}

/** Options of `batches`. */
export interface LoaderOptions<U> {
  batchSize: number;
  /** Seed of the epoch permutations. */
  seed: number;
  /** Which split (default `train`). */
  split?: "train" | "test";
  /** Shuffle each epoch (default true); otherwise dataset order. */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true, as iBOT's loader). */
  dropLast?: boolean;
  /** Where to start (default epoch 0, step 0). */
  start?: Position;
  /** Stop before this epoch (default: never stop). */
  epochs?: number;
  /** Turns a host batch into device data (runs for batch k + 1 while batch k is being consumed). */
  upload?: (batch: HostBatch) => U | Promise<U>;
  /** Frees an uploaded batch the consumer never received (when the loop is left early). */
  dispose?: (data: U) => void;
}

/** Batches per epoch. */
export function stepsPerEpoch(n: number, batchSize: number, dropLast = true): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/** The order of epoch `epoch`: `random.permutation(random.foldIn(random.key(seed), epoch), n)` on the host. */
export function epochPermutation(seed: number, epoch: number, n: number): Int32Array {
  return permutation(foldIn(seedKey(seed), epoch), n);
}

/** Copies images `indices` of a split into one batch array. */
export function gatherBatch(ds: Dataset, split: Split, indices: ArrayLike<number>): Float32Array {
  const per = imageSize(ds);
  const out = new Float32Array(indices.length * per);
  for (let i = 0; i < indices.length; i++) {
    const j = indices[i];
    out.set(split.images.subarray(j * per, (j + 1) * per), i * per);
  }
  return out;
}

const macrotask = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/**
 * Yields the batches from `opts.start` on, one in flight: the next batch is assembled (and uploaded) in a
 * macrotask after the current one is handed out, i.e. while the consumer awaits its step.
 *
 * @example
 * ```ts
 * import { data } from "./mod.ts";
 * const ds = data.embeddedDataset({ trainPerClass: 8, testPerClass: 1 });
 * for await (const b of data.batches(ds, { batchSize: 16, seed: 0, epochs: 1 })) {
 *   console.log(b.epoch, b.step, b.shape); // 0 0 [16, 3, 32, 32] ...
 * }
 * ```
 */
export async function* batches<U = undefined>(ds: Dataset, opts: LoaderOptions<U>): AsyncGenerator<Batch<U>> {
  const split = ds[opts.split ?? "train"];
  const { batchSize, seed, shuffle = true, dropLast = true, epochs = Infinity } = opts;
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new RangeError(`batches: batchSize = ${batchSize}`);
  const steps = stepsPerEpoch(split.n, batchSize, dropLast);
  if (steps === 0) throw new RangeError(`batches: ${split.n} images give no batch of ${batchSize}`);
  const start = opts.start ?? { epoch: 0, step: 0 };
  if (!(Number.isInteger(start.epoch) && start.epoch >= 0 && Number.isInteger(start.step) && start.step >= 0)) {
    throw new RangeError(`batches: bad start position ${JSON.stringify(start)}`);
  }
  let pos: Position = { epoch: start.epoch + Math.floor(start.step / steps), step: start.step % steps };
  const advance = (
    p: Position,
  ): Position => (p.step + 1 < steps ? { ...p, step: p.step + 1 } : { epoch: p.epoch + 1, step: 0 });
  let order: { epoch: number; perm: Int32Array } | null = null;
  const orderOf = (epoch: number) => {
    if (order?.epoch !== epoch) {
      const perm = shuffle ? epochPermutation(seed, epoch, split.n) : Int32Array.from({ length: split.n }, (_, i) => i);
      order = { epoch, perm };
    }
    return order.perm;
  };
  const prepare = (p: Position): Promise<Batch<U>> => {
    const promise = assemble(p);
    promise.catch(() => {}); // a failure surfaces when the batch is awaited, not as an unhandled rejection
    return promise;
  };
  const assemble = async (p: Position): Promise<Batch<U>> => {
    await macrotask();
    const perm = orderOf(p.epoch);
    const indices = perm.slice(p.step * batchSize, Math.min((p.step + 1) * batchSize, split.n));
    const host: HostBatch = {
      epoch: p.epoch,
      step: p.step,
      iteration: p.epoch * steps + p.step,
      next: advance(p),
      shape: [indices.length, ds.channels, ds.size, ds.size],
      images: gatherBatch(ds, split, indices),
      labels: Int32Array.from(indices, (i) => split.labels[i]),
      indices,
    };
    const data = (opts.upload ? await opts.upload(host) : undefined) as U;
    return { ...host, data };
  };
  let pending: Promise<Batch<U>> | null = pos.epoch < epochs ? prepare(pos) : null;
  try {
    while (pending) {
      const current = await pending;
      pos = current.next;
      pending = pos.epoch < epochs ? prepare(pos) : null;
      yield current;
    }
  } finally {
    if (pending) {
      // Left early: free the batch in flight.
      const p = pending;
      pending = null;
      const b = await p.catch(() => null);
      if (b && opts.dispose) opts.dispose(b.data);
    }
  }
}
