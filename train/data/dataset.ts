/**
 * The one interface every dataset shares: images as one host `Float32Array` `[n, C, size, size]` with values in
 * [0, 1], int32 labels, a train and a test split.
 *
 * @module
 */

/** One split: `n` images `[n, C, size, size]` (row-major, values in [0, 1]) and their labels. */
export interface Split {
  /** All images, `[n, C, size, size]` row-major, values in [0, 1]. */
  images: Float32Array;
  /** One class index per image, in `[0, numClasses)`. */
  labels: Int32Array;
  /** Number of images. */
  n: number;
}

/**
 * A labelled image dataset held in host memory.
 *
 * @example
 * ```ts
 * import { data } from "./mod.ts";
 * const ds: data.Dataset = data.embeddedDataset({ seed: 0, trainPerClass: 10, testPerClass: 2 });
 * console.log(ds.name, ds.numClasses, ds.train.n);
 * ```
 */
export interface Dataset {
  /** Short identifier (e.g. `fashion-mnist`, `embedded-shapes-32`, an image folder's name). */
  name: string;
  /** Number of classes; labels lie in `[0, numClasses)`. */
  numClasses: number;
  /** Channels per image (1 or 3). */
  channels: number;
  /** Side of the square images in pixels. */
  size: number;
  /** Human-readable class names (index = label), when known. */
  classNames?: readonly string[];
  /** Training split (pretraining and the k-NN memory bank). */
  train: Split;
  /** Test split (k-NN queries). */
  test: Split;
}

/** Elements of one image. */
export function imageSize(ds: Pick<Dataset, "channels" | "size">): number {
  return ds.channels * ds.size * ds.size;
}

/** Image `i` of a split as a view `[C, size, size]` (no copy). */
export function imageAt(ds: Dataset, split: Split, i: number): Float32Array {
  const s = imageSize(ds);
  return split.images.subarray(i * s, (i + 1) * s);
}

/** Images per class of a split. */
export function classCounts(ds: Pick<Dataset, "numClasses">, split: Split): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (let i = 0; i < split.n; i++) counts[split.labels[i]]++;
  return counts;
}

/** Throws a descriptive error when the arrays do not match the declared sizes or labels are out of range. */
export function checkDataset(ds: Dataset): void {
  const per = imageSize(ds);
  for (const [name, s] of [["train", ds.train], ["test", ds.test]] as const) {
    if (s.images.length !== s.n * per) {
      throw new RangeError(
        `${ds.name}.${name}: ${s.images.length} values for ${s.n} images of ${ds.channels}x${ds.size}x${ds.size}`,
      );
    }
    if (s.labels.length !== s.n) {
      throw new RangeError(`${ds.name}.${name}: ${s.labels.length} labels for ${s.n} images`);
    }
    for (let i = 0; i < s.n; i++) {
      if (!(s.labels[i] >= 0 && s.labels[i] < ds.numClasses)) {
        throw new RangeError(`${ds.name}.${name}: label ${s.labels[i]} of image ${i} outside [0, ${ds.numClasses})`);
      }
    }
  }
}
