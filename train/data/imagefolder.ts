/**
 * An image folder (torchvision `ImageFolder` layout): one sub-folder per class holding JPEG/PNG files, decoded
 * with the WASM codecs `@jsquash/jpeg` and `@jsquash/png` (`decode.ts`; their WebAssembly is embedded, so reading
 * a folder needs `--allow-read` for that folder only), then resized on the host to a fixed square size (centre
 * square crop, then Pillow-style antialiased bilinear resampling).
 *
 * Layouts: `root/<class>/*` (everything is training data unless `testFraction` holds some out), or
 * `root/train/<class>/*` with `root/val/<class>/*` (or `root/test/...`) as the test split. Classes are the
 * sorted sub-folder names. Undecodable files are skipped and counted in one warning.
 *
 * @module
 */
import type { Dataset, Split } from "./dataset.ts";
import { foldIn, permutation, seedKey } from "../../ops/host_random.ts";
import { type DecodedImage, decodeImage } from "./decode.ts";
import { DataError } from "../../errors.ts";

export { type DecodedImage, decodeImage } from "./decode.ts";

/** Options of `loadImageFolder`. */
export interface ImageFolderOptions {
  /** Output side in pixels (default 32). */
  size?: number;
  /** 3 (RGB, default) or 1 (luma `0.299R + 0.587G + 0.114B`). */
  channels?: 1 | 3;
  /** `crop` (default): the centred square of the shorter side, resized; `stretch`: the whole image, squashed. */
  fit?: "crop" | "stretch";
  /** Without a train/val layout, the fraction of each class held out as the test split (default 0). */
  testFraction?: number;
  /** Seed of the held-out selection (default 0). */
  seed?: number;
  /** Read at most this many files per class and split (in name order). */
  limitPerClass?: number;
  /** Dataset name (default: the folder's base name). */
  name?: string;
}

/** An image-folder dataset, with the files that could not be decoded. */
export interface ImageFolderDataset extends Dataset {
  classNames: readonly string[];
  /** Paths of the undecodable files that were skipped. */
  skipped: string[];
  /** Why each skipped file could not be decoded (same order as `skipped`). */
  skipReasons: string[];
}

const EXTENSIONS = /\.(png|jpe?g)$/i;

/** Pillow's antialiased bilinear coefficients for resampling `[start, start + extent)` of an axis to `out`. */
function coefficients(start: number, extent: number, out: number): { first: Int32Array; w: Float32Array[] } {
  const scale = extent / out;
  const fs = Math.max(scale, 1);
  const first = new Int32Array(out);
  const w: Float32Array[] = [];
  for (let o = 0; o < out; o++) {
    const centre = (o + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - fs + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + fs + 0.5), extent);
    const row = new Float32Array(Math.max(hi - lo, 1));
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const v = Math.max(0, 1 - Math.abs((i - centre + 0.5) / fs));
      row[i - lo] = v;
      sum += v;
    }
    if (sum > 0) { for (let i = 0; i < row.length; i++) row[i] /= sum; }
    else row[0] = 1;
    first[o] = start + lo;
    w.push(row);
  }
  return { first, w };
}

/**
 * Resizes RGBA pixels to planar `[channels, size, size]` floats in [0, 1]: `crop` takes the centred square of
 * the shorter side, `stretch` the whole image; antialiased bilinear (Pillow's filter) in both directions.
 */
export function resizeImage(
  img: DecodedImage,
  size: number,
  channels: 1 | 3 = 3,
  fit: "crop" | "stretch" = "crop",
  out: Float32Array = new Float32Array(channels * size * size),
): Float32Array {
  const { width: w, height: h, data } = img;
  const side = Math.min(w, h);
  const [x0, y0, cw, ch] = fit === "crop"
    ? [Math.floor((w - side) / 2), Math.floor((h - side) / 2), side, side]
    : [0, 0, w, h];
  const cx = coefficients(x0, cw, size);
  const cy = coefficients(y0, ch, size);
  // Rows first: [ch rows of the crop][size columns][3].
  const tmp = new Float32Array(ch * size * 3);
  for (let y = 0; y < ch; y++) {
    const rowBase = (y0 + y) * w;
    for (let o = 0; o < size; o++) {
      const wts = cx.w[o];
      let [r, g, b] = [0, 0, 0];
      for (let k = 0; k < wts.length; k++) {
        const p = (rowBase + cx.first[o] + k) * 4;
        r += wts[k] * data[p];
        g += wts[k] * data[p + 1];
        b += wts[k] * data[p + 2];
      }
      const t = (y * size + o) * 3;
      tmp[t] = r;
      tmp[t + 1] = g;
      tmp[t + 2] = b;
    }
  }
  const plane = size * size;
  for (let o = 0; o < size; o++) {
    const wts = cy.w[o];
    for (let x = 0; x < size; x++) {
      let [r, g, b] = [0, 0, 0];
      for (let k = 0; k < wts.length; k++) {
        const t = ((cy.first[o] - y0 + k) * size + x) * 3;
        r += wts[k] * tmp[t];
        g += wts[k] * tmp[t + 1];
        b += wts[k] * tmp[t + 2];
      }
      const i = o * size + x;
      const c = (v: number) => Math.min(Math.max(v / 255, 0), 1);
      if (channels === 3) {
        out[i] = c(r);
        out[plane + i] = c(g);
        out[2 * plane + i] = c(b);
      } else {
        out[i] = c(0.299 * r + 0.587 * g + 0.114 * b);
      }
    }
  }
  return out;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function listDir(path: string): Promise<{ dirs: string[]; files: string[] }> {
  const dirs: string[] = [];
  const files: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (e.name.startsWith(".")) continue;
    if (e.isDirectory) dirs.push(e.name);
    else if (e.isFile && EXTENSIONS.test(e.name)) files.push(e.name);
  }
  return { dirs: dirs.sort(), files: files.sort() };
}

/** The image files of each class sub-folder of `dir`, in name order. */
async function scan(dir: string, classes: readonly string[], limit: number): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (let c = 0; c < classes.length; c++) {
    const sub = `${dir}/${classes[c]}`;
    if (!(await isDir(sub))) continue;
    const { files } = await listDir(sub);
    for (const f of files.slice(0, limit)) out.push([`${sub}/${f}`, c]);
  }
  return out;
}

async function decodeAll(
  entries: [string, number][],
  size: number,
  channels: 1 | 3,
  fit: "crop" | "stretch",
  skipped: { paths: string[]; reasons: string[] },
): Promise<Split> {
  const per = channels * size * size;
  const images = new Float32Array(entries.length * per);
  const labels: number[] = [];
  for (const [path, label] of entries) {
    let img: DecodedImage;
    try {
      img = await decodeImage(await Deno.readFile(path));
    } catch (e) {
      // A missing read permission is the caller's to fix, not a property of this file: let it through.
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) throw e;
      skipped.paths.push(path);
      skipped.reasons.push((e as Error).message);
      continue;
    }
    resizeImage(img, size, channels, fit, images.subarray(labels.length * per, (labels.length + 1) * per));
    labels.push(label);
  }
  return { images: images.slice(0, labels.length * per), labels: Int32Array.from(labels), n: labels.length };
}

/**
 * Loads an image folder as a `Dataset` (see the module doc for the layouts). Throws a `DataError` when `root`
 * is not a folder, holds no class sub-folders, no image files, or no decodable image; warns once with the
 * count of undecodable files (which are skipped) and the first one's reason, and once naming empty classes.
 *
 * @example
 * ```ts ignore
 * import { data } from "./mod.ts";
 * const ds = await data.loadImageFolder("./my-images", { size: 32, testFraction: 0.1 });
 * console.log(ds.classNames, ds.train.n, ds.test.n, ds.skipped.length);
 * ```
 */
export async function loadImageFolder(root: string, opts: ImageFolderOptions = {}): Promise<ImageFolderDataset> {
  const { size = 32, channels = 3, fit = "crop", testFraction = 0, seed = 0 } = opts;
  const limit = opts.limitPerClass ?? Infinity;
  if (!(Number.isInteger(size) && size >= 1)) throw new RangeError(`loadImageFolder: size = ${size}`);
  if (channels !== 1 && channels !== 3) throw new RangeError(`loadImageFolder: channels must be 1 or 3`);
  if (!(testFraction >= 0 && testFraction < 1)) throw new RangeError(`loadImageFolder: testFraction ${testFraction}`);
  const base = root.replace(/\/+$/, "") || "/";
  if (!(await isDir(base))) {
    throw new DataError(
      `loadImageFolder: ${root} does not exist or is not a folder (expected ${root}/<class>/<image>)`,
    );
  }
  const top = await listDir(base);
  let trainDir = base;
  let testDir: string | null = null;
  if (top.dirs.includes("train")) {
    trainDir = `${base}/train`;
    const t = ["val", "test"].find((d) => top.dirs.includes(d));
    testDir = t ? `${base}/${t}` : null;
  }
  const classes = (await listDir(trainDir)).dirs;
  if (classes.length === 0) {
    throw new DataError(
      `loadImageFolder: ${trainDir} has no class sub-folders (expected ${trainDir}/<class>/<image>)`,
    );
  }
  let trainEntries = await scan(trainDir, classes, limit);
  if (trainEntries.length === 0) {
    throw new DataError(
      `loadImageFolder: no images found in the ${classes.length} class folder(s) of ${trainDir} ` +
        `(${classes.slice(0, 3).join(", ")}${classes.length > 3 ? ", ..." : ""}; looked for *.png, *.jpg, *.jpeg)`,
    );
  }
  const empty = classes.filter((_, c) => !trainEntries.some(([, l]) => l === c));
  if (empty.length > 0) {
    console.warn(`loadImageFolder: no images in ${empty.map((c) => `${trainDir}/${c}`).join(", ")}`);
  }
  let testEntries: [string, number][] = [];
  if (testDir) {
    const extra = (await listDir(testDir)).dirs.filter((d) => !classes.includes(d));
    if (extra.length > 0) throw new DataError(`loadImageFolder: ${testDir} has classes not in ${trainDir}: ${extra}`);
    testEntries = await scan(testDir, classes, limit);
  } else if (testFraction > 0) {
    // Hold out round(fraction · count) files of each class, chosen by a seeded permutation.
    const key = foldIn(seedKey(seed), 0x7e57);
    const held = new Set<string>();
    classes.forEach((_, c) => {
      const files = trainEntries.filter(([, l]) => l === c);
      const perm = permutation(foldIn(key, c), files.length);
      const k = Math.round(testFraction * files.length);
      for (let i = 0; i < k; i++) held.add(files[perm[i]][0]);
    });
    testEntries = trainEntries.filter(([p]) => held.has(p));
    trainEntries = trainEntries.filter(([p]) => !held.has(p));
  }
  const skipped = { paths: [] as string[], reasons: [] as string[] };
  const train = await decodeAll(trainEntries, size, channels, fit, skipped);
  const test = await decodeAll(testEntries, size, channels, fit, skipped);
  const n = skipped.paths.length;
  const first = `${skipped.paths[0]}: ${skipped.reasons[0]}`;
  if (train.n === 0) {
    throw new DataError(
      `loadImageFolder: none of the ${n} image file(s) under ${trainDir} could be decoded (first: ${first})`,
    );
  }
  if (n > 0) {
    console.warn(`loadImageFolder: skipped ${n} undecodable file${n > 1 ? "s" : ""} under ${root} (first: ${first})`);
  }
  return {
    name: opts.name ?? (base.split("/").pop() || "imagefolder"),
    numClasses: classes.length,
    channels,
    size,
    classNames: classes,
    train,
    test,
    skipped: skipped.paths,
    skipReasons: skipped.reasons,
  };
}
