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
export { foldIn as hostFoldIn, type Key as HostKey, permutation as hostPermutation, seedKey, Stream } from "./rng.ts";
