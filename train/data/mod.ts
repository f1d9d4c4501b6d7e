/**
 * Datasets and the batch loader: the embedded shapes dataset, Fashion-MNIST (IDX), image folders (JPEG/PNG),
 * all behind one `Dataset` interface, and a deterministic, resumable, prefetching loader.
 *
 * @module
 */
export { checkDataset, classCounts, type Dataset, imageAt, imageSize, type Split } from "./dataset.ts";
export { EMBEDDED_CLASSES, embeddedDataset, type EmbeddedOptions } from "./embedded.ts";
export {
  type FashionMnistOptions,
  FMNIST_CLASSES,
  FMNIST_DIR,
  FMNIST_FILES,
  gunzip,
  type Idx,
  loadFashionMnist,
  parseIdx,
  readIdx,
} from "./fmnist.ts";
export {
  type DecodedImage,
  decodeImage,
  type ImageFolderDataset,
  type ImageFolderOptions,
  loadImageFolder,
  resizeImage,
} from "./imagefolder.ts";
export {
  type Batch,
  batches,
  epochPermutation,
  gatherBatch,
  type HostBatch,
  type LoaderOptions,
  type Position,
  stepsPerEpoch,
} from "./loader.ts";
export {
  foldIn as hostFoldIn,
  HostRng,
  type Key as HostKey,
  permutation as hostPermutation,
  seedKey,
} from "../../ops/host_random.ts";
import { HostRng } from "../../ops/host_random.ts";
/** @deprecated The host stream is `HostRng` (its `range(a, b)` is `uniformIn(a, b)`); this alias goes next release. */
export const Stream: typeof HostRng = HostRng;
/** @deprecated Use `HostRng`. */
export type Stream = HostRng;
