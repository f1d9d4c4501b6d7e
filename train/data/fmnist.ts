/**
 * Fashion-MNIST from its IDX files (`train-images-idx3-ubyte.gz`, ...), gunzipped with the platform's
 * `DecompressionStream("gzip")`. By default read from `/usr/share/datasets/fashion-mnist/`, where the Debian
 * package `dataset-fashion-mnist` installs them.
 *
 * @module
 */
import type { Dataset, Split } from "./dataset.ts";
import { DataError } from "../../errors.ts";

/** Where the Debian package `dataset-fashion-mnist` puts the files. */
export const FMNIST_DIR = "/usr/share/datasets/fashion-mnist";

/** The ten Fashion-MNIST classes (index = label). */
export const FMNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
] as const;

/** The IDX file names (without `.gz`). */
export const FMNIST_FILES = {
  trainImages: "train-images-idx3-ubyte",
  trainLabels: "train-labels-idx1-ubyte",
  testImages: "t10k-images-idx3-ubyte",
  testLabels: "t10k-labels-idx1-ubyte",
} as const;

/** A parsed IDX array: its dimensions and its values (typed by the IDX element type, big-endian decoded). */
export interface Idx {
  dims: number[];
  data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/**
 * Decompresses gzip bytes with `DecompressionStream`. `limit(head)` may bound the output: it sees the bytes
 * decompressed so far and returns the most the stream may hold (a hostile file then cannot inflate without
 * bound). Corrupt or truncated data and an exceeded limit throw a `DataError` naming `what`.
 */
export async function gunzip(
  bytes: Uint8Array,
  what = "gzip data",
  limit: (head: Uint8Array) => number = () => Infinity,
): Promise<Uint8Array> {
  // Fed 4 KiB at a time, on demand: one input chunk inflates to at most ~4 MiB before the limit is checked.
  let at = 0;
  const input = new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(c) {
      if (at >= bytes.length) c.close();
      else c.enqueue(bytes.slice(at, at += 4096) as Uint8Array<ArrayBuffer>);
    },
  });
  const stream = input.pipeThrough(new DecompressionStream("gzip"));
  const chunks: Uint8Array[] = [];
  let total = 0;
  let head: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      total += chunk.length;
      if (head.length < 64) head = concatBytes(chunks).subarray(0, 64);
      const max = limit(head);
      if (total > max) {
        throw new DataError(`${what}: decompresses to more than the ${max} bytes its header declares`);
      }
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(`${what}: corrupt gzip stream (${(e as Error).message})`);
  }
  return concatBytes(chunks);
}

function concatBytes(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

const IDX_TYPES: Record<number, [string, number]> = {
  0x08: ["uint8", 1],
  0x09: ["int8", 1],
  0x0b: ["int16", 2],
  0x0c: ["int32", 4],
  0x0d: ["float32", 4],
  0x0e: ["float64", 8],
};

/**
 * Parses IDX bytes: magic `0x00 0x00 <type> <rank>`, `rank` big-endian uint32 dimensions, then the values
 * (big-endian).
 *
 * @example
 * ```ts
 * import { data } from "./mod.ts";
 * const idx = data.parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]));
 * console.log(idx.dims, idx.data); // [2] Uint8Array [7, 9]
 * ```
 */
export function parseIdx(bytes: Uint8Array, what = "IDX"): Idx {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    throw new DataError(`${what}: not an IDX file (bad magic ${Array.from(bytes.slice(0, 4))})`);
  }
  const type = IDX_TYPES[bytes[2]];
  if (!type) throw new DataError(`${what}: unknown IDX element type 0x${bytes[2].toString(16)}`);
  const rank = bytes[3];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 + 4 * rank) throw new DataError(`${what}: truncated header`);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  const [name, width] = type;
  const start = 4 + 4 * rank;
  if (bytes.length < start + count * width) {
    throw new DataError(
      `${what}: ${bytes.length - start} data bytes for dims [${dims}] of ${name} (need ${count * width})`,
    );
  }
  const body = (i: number) => start + i * width;
  let data: Idx["data"];
  switch (name) {
    case "uint8":
      data = bytes.slice(start, start + count);
      break;
    case "int8":
      data = new Int8Array(bytes.slice(start, start + count).buffer);
      break;
    case "int16":
      data = Int16Array.from({ length: count }, (_, i) => view.getInt16(body(i)));
      break;
    case "int32":
      data = Int32Array.from({ length: count }, (_, i) => view.getInt32(body(i)));
      break;
    case "float32":
      data = Float32Array.from({ length: count }, (_, i) => view.getFloat32(body(i)));
      break;
    default:
      data = Float64Array.from({ length: count }, (_, i) => view.getFloat64(body(i)));
  }
  return { dims, data };
}

/**
 * The total size the IDX header at the start of `head` declares (header plus values), Infinity until the
 * header is complete; throws when what has arrived is not an IDX header.
 */
function idxDeclaredSize(head: Uint8Array, what: string): number {
  if (head.length < 4) return Infinity;
  if (head[0] !== 0 || head[1] !== 0 || !IDX_TYPES[head[2]]) parseIdx(head, what); // throws the reason
  const rank = head[3];
  if (head.length < 4 + 4 * rank) return Infinity;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let count = IDX_TYPES[head[2]][1];
  for (let i = 0; i < rank; i++) count *= view.getUint32(4 + 4 * i);
  return 4 + 4 * rank + count;
}

/**
 * Reads an IDX file, gunzipping it when it starts with the gzip magic (never past the size its header
 * declares). Corrupt files throw a `DataError` naming the path.
 */
export async function readIdx(path: string): Promise<Idx> {
  let bytes: Uint8Array = await Deno.readFile(path);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = await gunzip(bytes, path, (h) => idxDeclaredSize(h, path));
  return parseIdx(bytes, path);
}

/** Options of `loadFashionMnist`. */
export interface FashionMnistOptions {
  /** Folder of the four IDX files, `.gz` or not (default `FMNIST_DIR`). */
  dir?: string;
  /** Keep only the first n training images. */
  trainLimit?: number;
  /** Keep only the first n test images. */
  testLimit?: number;
}

async function findFile(dir: string, base: string): Promise<string> {
  for (const name of [`${base}.gz`, base]) {
    const path = `${dir.replace(/\/$/, "")}/${name}`;
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  throw new DataError(
    `Fashion-MNIST: ${dir.replace(/\/$/, "")}/${base}.gz not found. Install the Debian package ` +
      `dataset-fashion-mnist (apt-get install dataset-fashion-mnist), which puts the files in ${FMNIST_DIR}, ` +
      "or pass { dir } pointing at a folder with the four *-ubyte(.gz) files.",
  );
}

async function loadSplit(dir: string, images: string, labels: string, limit?: number): Promise<Split> {
  const labelPath = await findFile(dir, labels);
  const [im, lb] = await Promise.all([readIdx(await findFile(dir, images)), readIdx(labelPath)]);
  if (im.dims.length !== 3 || im.dims[1] !== im.dims[2] || !(im.data instanceof Uint8Array)) {
    throw new DataError(`Fashion-MNIST: ${images} must hold uint8 [n, s, s] images, got dims [${im.dims}]`);
  }
  if (lb.dims.length !== 1 || lb.dims[0] !== im.dims[0]) {
    throw new DataError(`Fashion-MNIST: ${labels} has dims [${lb.dims}] for ${im.dims[0]} images`);
  }
  const n = Math.min(im.dims[0], limit ?? Infinity);
  const bad = lb.data.subarray(0, n).findIndex((l) => !(Number.isInteger(l) && l >= 0 && l < FMNIST_CLASSES.length));
  if (bad >= 0) {
    throw new DataError(
      `Fashion-MNIST: ${labelPath}: label ${lb.data[bad]} of item ${bad} outside [0, ${FMNIST_CLASSES.length})`,
    );
  }
  const per = im.dims[1] * im.dims[2];
  const out = new Float32Array(n * per);
  for (let i = 0; i < n * per; i++) out[i] = im.data[i] / 255;
  return { images: out, labels: Int32Array.from(lb.data.subarray(0, n)), n };
}

/**
 * Fashion-MNIST as a `Dataset`: 1-channel 28×28 images in [0, 1] (`byte / 255`), 60 000 train and 10 000
 * test images. Throws an error naming the path and the Debian package when the files are missing.
 *
 * @example
 * ```ts ignore
 * import { data } from "./mod.ts";
 * const ds = await data.loadFashionMnist();
 * console.log(ds.train.n, ds.test.n); // 60000 10000
 * ```
 */
export async function loadFashionMnist(opts: FashionMnistOptions = {}): Promise<Dataset> {
  const dir = opts.dir ?? FMNIST_DIR;
  try {
    if (!(await Deno.stat(dir)).isDirectory) throw new Deno.errors.NotFound(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    throw new DataError(
      `Fashion-MNIST: folder ${dir} not found. Install the Debian package dataset-fashion-mnist ` +
        `(apt-get install dataset-fashion-mnist), which puts the files in ${FMNIST_DIR}, or pass { dir }.`,
    );
  }
  const [train, test] = await Promise.all([
    loadSplit(dir, FMNIST_FILES.trainImages, FMNIST_FILES.trainLabels, opts.trainLimit),
    loadSplit(dir, FMNIST_FILES.testImages, FMNIST_FILES.testLabels, opts.testLimit),
  ]);
  const size = Math.round(Math.sqrt(train.n > 0 ? train.images.length / train.n : 28 * 28));
  return { name: "fashion-mnist", numClasses: 10, channels: 1, size, classNames: FMNIST_CLASSES, train, test };
}
