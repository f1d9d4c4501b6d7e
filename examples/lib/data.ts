/**
 * The examples' `--data` flag: `embedded`, `fmnist` or a folder of class sub-folders, with permission-aware errors
 * that name the flag and the permission to add.
 *
 * @module
 */
import { need, UsageError } from "./cli.ts";
import type { Dataset } from "../../train/data/dataset.ts";
import { embeddedDataset } from "../../train/data/embedded.ts";
import { FMNIST_DIR, loadFashionMnist } from "../../train/data/fmnist.ts";
import { loadImageFolder } from "../../train/data/imagefolder.ts";

/**
 * A folder without `train/` and `val/` (or `test/`) sub-folders holds out this fraction of each class (rounded,
 * chosen by a permutation of seed 0, so the same files every run) as its test split: the k-NN queries.
 * Pretraining uses the rest. A class of fewer than 5 images holds out none.
 */
export const FOLDER_TEST_FRACTION = 0.1;

/**
 * The side an image folder is stored at for crops of `cropSize` px: 32 for the small presets (as before), else
 * the crop's 8/7 (256 px for 224-px crops, as ImageNet's usual resize), so that random-resized crops sample real
 * pixels instead of upsampling a thumbnail.
 */
export function folderImageSize(cropSize: number): number {
  return cropSize <= 32 ? 32 : Math.round((cropSize * 8) / 7);
}

/**
 * Loads the dataset a `--data` value names; an image folder is decoded into memory at `folderSize` px (default
 * 32).
 */
export async function loadData(source: string, folderSize = 32): Promise<Dataset> {
  if (source === "embedded") return embeddedDataset({ seed: 0 });
  if (source === "fmnist") {
    need({ name: "read", path: FMNIST_DIR }, "--data fmnist", `--allow-read=${FMNIST_DIR}`);
    return await loadFashionMnist();
  }
  need({ name: "read", path: source }, `--data ${source}`, `--allow-read=${source}`);
  try {
    if (!(await Deno.stat(source)).isDirectory) throw new UsageError(`--data ${source}: not a folder`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new UsageError(`--data ${source}: no such folder`);
    throw e;
  }
  return await loadImageFolder(source, { testFraction: FOLDER_TEST_FRACTION, size: folderSize });
}
