/**
 * Safetensors: an 8-byte little-endian header length, a JSON header (`dtype`, `shape`, `data_offsets` per
 * tensor, optional `__metadata__` of strings), then raw little-endian data. A short reader and writer.
 */
import { Tensor } from "../ops/tensor.ts";
import { fromHost } from "../ops/engine.ts";
import { fromPaths, paths } from "../autograd/tree.ts";
import type { Backend } from "../ops/backend.ts";
import { defaultBackend } from "../ops/backends.ts";
import { allocHost, type DType, type HostArray } from "../ops/dtype.ts";
import { fmt, size } from "../ops/shape.ts";
import { CheckpointError, expectFormat, readCheckpointBytes, sniffFormat, unreadable } from "./format.ts";

/** One decoded entry: host data in one of our dtypes (F16/BF16 widen to float32, I64 narrows to int32). */
export interface HostTensor {
  /** Element type after decoding. */
  dtype: DType;
  /** Dimensions. */
  shape: number[];
  /** Row-major values. */
  data: HostArray;
}

/** Decoded file contents. */
export interface SafetensorsFile {
  /** Tensors by name, in file order. */
  tensors: Map<string, HostTensor>;
  /** The `__metadata__` strings. */
  metadata: Record<string, string>;
  /** The stored dtype of each tensor (`F16`, `I64`, ...). */
  dtypes: Map<string, string>;
}

const BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  U32: 4,
  U8: 1,
  I8: 1,
  BOOL: 1,
};

const scratch = new DataView(new ArrayBuffer(4));

/** The value of an IEEE half-precision bit pattern. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** The value of a bfloat16 bit pattern (the upper half of a float32). */
export function bf16ToF32(h: number): number {
  scratch.setUint32(0, h << 16, true);
  return scratch.getFloat32(0, true);
}

function decode(dtype: string, shape: number[], bytes: Uint8Array, name: string, file: string): HostTensor {
  const n = size(shape);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = (d: DType, get: (i: number) => number): HostTensor => {
    const data = allocHost(d, n);
    for (let i = 0; i < n; i++) data[i] = get(i);
    return { dtype: d, shape, data };
  };
  switch (dtype) {
    case "F32":
      return out("float32", (i) => view.getFloat32(i * 4, true));
    case "F64":
      return out("float64", (i) => view.getFloat64(i * 8, true));
    case "F16":
      return out("float32", (i) => f16ToF32(view.getUint16(i * 2, true)));
    case "BF16":
      return out("float32", (i) => bf16ToF32(view.getUint16(i * 2, true)));
    case "I32":
      return out("int32", (i) => view.getInt32(i * 4, true));
    case "U32":
      return out("uint32", (i) => view.getUint32(i * 4, true));
    case "I64":
      return out("int32", (i) => {
        const v = view.getBigInt64(i * 8, true);
        if (v > 2147483647n || v < -2147483648n) {
          throw new CheckpointError(`${file}: tensor '${name}' has an int64 value outside int32`);
        }
        return Number(v);
      });
    case "U8":
      return out("int32", (i) => bytes[i]);
    case "I8":
      return out("int32", (i) => view.getInt8(i));
    case "BOOL":
      return out("bool", (i) => (bytes[i] ? 1 : 0));
  }
  throw new CheckpointError(`${file}: tensor '${name}' has unsupported dtype ${dtype}`);
}

/** The largest JSON header read (the format's own limit). */
const MAX_HEADER_BYTES = 100_000_000;

/** One validated header entry. */
interface HeaderEntry {
  name: string;
  dtype: string;
  shape: number[];
  start: number;
  end: number;
}

/**
 * The JSON header's length from a file's first 8 bytes, checked against the file's size (`fileSize`, when
 * `first` is only its start) and the format's limit before anything is allocated for it.
 */
function headerLength(first: Uint8Array, fileSize: number, file: string): number {
  const fail = (what: string): never => {
    throw new CheckpointError(`${file}: ${what}`);
  };
  if (fileSize < 8 || first.byteLength < 8) fail("not a safetensors file (shorter than 8 bytes)");
  const len = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
  if (len > BigInt(fileSize - 8)) {
    fail(`corrupt safetensors header length ${len} (the file has ${fileSize - 8} bytes after it)`);
  }
  if (len > MAX_HEADER_BYTES) fail(`safetensors header length ${len} exceeds the format's limit ${MAX_HEADER_BYTES}`);
  return Number(len);
}

/**
 * Parses and validates a safetensors header by the format's rules: a JSON object (after the 8-byte length, within
 * the file) whose entries each have a known `dtype`, a `shape` of non-negative integers and `data_offsets`
 * `[begin, end]` with `end - begin` = elements × dtype size; sorted by offset, the entries tile the data buffer
 * exactly (no overlap, no gap, nothing past its end). `__metadata__` maps strings to strings. `bytes` may be the
 * file's start (at least the length and the header) when `fileSize` gives the whole file's size.
 */
function parseHeader(bytes: Uint8Array, file: string, fileSize = bytes.byteLength): {
  entries: HeaderEntry[];
  metadata: Record<string, string>;
  base: number;
} {
  const fail = (what: string): never => {
    throw new CheckpointError(`${file}: ${what}`);
  };
  const format = sniffFormat(bytes);
  if (format === "pth" || format === "legacy-pth" || format === "pickle") expectFormat(bytes, "safetensors", file);
  const headerLen = headerLength(bytes, fileSize, file);
  if (bytes[8] !== 0x7b) fail("corrupt safetensors header (it does not start with '{')");
  let header: unknown; // an object: the text starts with '{' and parses
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    fail(`corrupt safetensors header (${(e as Error).message})`);
  }
  const base = 8 + headerLen;
  const dataLen = fileSize - base;
  const entries: HeaderEntry[] = [];
  let metadata: Record<string, string> = {};
  const isObject = (x: unknown): x is Record<string, unknown> =>
    x !== null && typeof x === "object" && !Array.isArray(x);
  const isCount = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!isObject(entry) || !Object.values(entry).every((v) => typeof v === "string")) {
        fail("__metadata__ is not an object of strings");
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    const bad = (what: string): never => fail(`tensor '${name}' ${what}`);
    if (!isObject(entry)) bad(`is ${JSON.stringify(entry)?.slice(0, 40)}, not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string" || !BYTES[dtype]) bad(`has unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      bad(`has shape ${JSON.stringify(shape)} (dimensions must be non-negative integers)`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      bad(`has data_offsets ${JSON.stringify(offsets)} (two non-negative integers)`);
    }
    const [start, end] = offsets as [number, number];
    if (start > end) bad(`has data_offsets [${start}, ${end}] out of order`);
    if (end > dataLen) bad(`has data_offsets [${start}, ${end}] past the ${dataLen} data bytes of the file`);
    const want = size(shape as number[]) * BYTES[dtype as string];
    if (end - start !== want) {
      bad(
        `${dtype}${fmt(shape as number[])} needs ${want} bytes, but its data_offsets [${start}, ${end}] hold ` +
          `${end - start}`,
      );
    }
    entries.push({ name, dtype: dtype as string, shape: shape as number[], start, end });
  }
  const sorted = [...entries].sort((a, b) => a.start - b.start || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.start < at) fail(`tensor '${e.name}' data_offsets [${e.start}, ${e.end}] overlap another tensor's`);
    if (e.start > at) {
      fail(`tensor '${e.name}' data_offsets [${e.start}, ${e.end}] leave bytes ${at}..${e.start} unused`);
    }
    at = e.end;
  }
  if (at !== dataLen) fail(`${dataLen - at} bytes after the last tensor's data are not described by the header`);
  return { entries, metadata, base };
}

/**
 * Parses safetensors bytes; `file` names the source in errors. The header is validated by the format's rules
 * (see `CheckpointError` for what a refused file reports).
 *
 * @example
 * ```ts ignore
 * import { parseSafetensors } from "./mod.ts";
 * const file = parseSafetensors(await Deno.readFile("model.safetensors"), "model.safetensors");
 * for (const [name, t] of file.tensors) console.log(name, t.dtype, t.shape);
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, file = "<bytes>"): SafetensorsFile {
  const { entries, metadata, base } = parseHeader(bytes, file);
  const tensors = new Map<string, HostTensor>();
  const dtypes = new Map<string, string>();
  for (const { name, dtype, shape, start, end } of entries) {
    tensors.set(name, decode(dtype, shape, bytes.subarray(base + start, base + end), name, file));
    dtypes.set(name, dtype);
  }
  return { tensors, metadata, dtypes };
}

/** A safetensors file's header: each tensor's stored dtype and shape, and the metadata strings. */
export interface SafetensorsHeader {
  /** Stored dtype (`F32`, `I64`, ...) and shape of each tensor, in file order. */
  tensors: Map<string, { dtype: string; shape: number[] }>;
  /** The `__metadata__` strings. */
  metadata: Record<string, string>;
}

/**
 * Reads and validates only the header of a safetensors file (not its tensor data), by the same rules as
 * `parseSafetensors`.
 *
 * @example
 * ```ts
 * import { readSafetensorsHeader, saveSafetensors, tensor } from "./mod.ts";
 * await saveSafetensors({ w: tensor([1, 2]) }, "/tmp/h.safetensors", { step: "3" });
 * const { tensors, metadata } = await readSafetensorsHeader("/tmp/h.safetensors"); // w: F32 [2]; { step: "3" }
 * ```
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw unreadable(path, e);
  }
  try {
    const size = (await file.stat()).size;
    const readInto = async (buf: Uint8Array) => {
      for (let at = 0; at < buf.byteLength;) {
        const got = await file.read(buf.subarray(at));
        if (got === null) throw new CheckpointError(`${path}: truncated while its header was read`);
        at += got;
      }
    };
    // 16 bytes tell the other formats apart (a legacy .pth's magic is 14 bytes), before the length is trusted.
    const first = new Uint8Array(Math.min(size, 16));
    await readInto(first);
    const format = sniffFormat(first);
    if (format === "pth" || format === "legacy-pth") expectFormat(first, "safetensors", path);
    const head = new Uint8Array(8 + headerLength(first, size, path));
    head.set(first.subarray(0, head.byteLength));
    if (head.byteLength > first.byteLength) await readInto(head.subarray(first.byteLength));
    const { entries, metadata } = parseHeader(head, path, size);
    return { tensors: new Map(entries.map((e) => [e.name, { dtype: e.dtype, shape: e.shape }])), metadata };
  } finally {
    file.close();
  }
}

const CODE: Record<DType, string> = { float32: "F32", float64: "F64", int32: "I32", uint32: "U32", bool: "BOOL" };

/**
 * Encodes named host tensors (in the given order) and string metadata as safetensors bytes.
 *
 * @example
 * ```ts
 * import { encodeSafetensors, parseSafetensors } from "./mod.ts";
 * const bytes = encodeSafetensors([["w", { dtype: "float32", shape: [2], data: new Float32Array([1, 2]) }]], {
 *   note: "demo",
 * });
 * console.log(parseSafetensors(bytes).metadata); // { note: "demo" }
 * ```
 */
export function encodeSafetensors(
  entries: Iterable<[string, HostTensor]>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    const bytes = t.dtype === "bool"
      ? Uint8Array.from(t.data, (v) => (v ? 1 : 0))
      : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: CODE[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * Writes a pytree of tensors to `path` atomically (a temporary file, then a rename), with dotted paths as
 * names and string metadata.
 *
 * @example
 * ```ts
 * import { saveSafetensors, tensor } from "./mod.ts";
 * await saveSafetensors({ w: tensor([1, 2]) }, "/tmp/w.safetensors", { step: "3" });
 * ```
 */
export async function saveSafetensors(
  tree: unknown,
  path: string,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(await hostEntries(tree), metadata));
}

/** The tensor leaves of a pytree read back to the host, by dotted path in tree order (what a file stores). */
export async function hostEntries(tree: unknown): Promise<[string, HostTensor][]> {
  const leaves = paths<unknown>(tree).filter((e): e is [string, Tensor] => e[1] instanceof Tensor);
  const datas = await Promise.all(leaves.map(([, t]) => t.data()));
  return leaves.map(([name, t], i) => [name, { dtype: t.dtype, shape: [...t.shape], data: datas[i] }]);
}

/**
 * Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs the folder:
 * readers never see a partial file, and after a power loss `path` holds either the old or the new bytes (the
 * data is on disk before the rename, the rename before returning). A killed write leaves a temporary file
 * (`isAtomicTemp`) that a later writer may remove.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}${ATOMIC_TMP}${Date.now()}-${Math.random().toString(36).slice(2)}`;
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncFolder(path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".");
}

/** The infix of `writeFileAtomic`'s temporary files: `<path>.tmp-<ms>-<random>`. */
const ATOMIC_TMP = ".tmp-";

/** Whether `name` (a file name in the same folder) is a temporary file of an atomic write of `target`. */
export function isAtomicTemp(name: string, target: string): boolean {
  const base = target.slice(target.lastIndexOf("/") + 1);
  return name.startsWith(base + ATOMIC_TMP) && /^\d+-[0-9a-z]*$/.test(name.slice(base.length + ATOMIC_TMP.length));
}

/**
 * Makes a rename in `dir` durable (fsync of the folder). Best effort: where a folder cannot be opened (Windows,
 * no read permission) or synced (some network file systems), the rename has still happened and only its
 * durability across a power loss is left to the file system.
 */
async function syncFolder(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return; // a folder cannot be opened as a file there
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // see above: durability only
  }
}

/**
 * Reads a safetensors file into a pytree of tensors (dotted names become nesting) plus its metadata.
 *
 * @example
 * ```ts
 * import { loadSafetensors } from "./mod.ts";
 * const { tree, metadata } = await loadSafetensors("/tmp/w.safetensors");
 * ```
 */
export async function loadSafetensors(
  path: string,
  opts: { backend?: Backend } = {},
): Promise<{ tree: Record<string, unknown>; flat: Map<string, Tensor>; metadata: Record<string, string> }> {
  const file = parseSafetensors(await readCheckpointBytes(path), path);
  const backend = opts.backend ?? defaultBackend();
  const flat = new Map<string, Tensor>();
  for (const [name, t] of file.tensors) {
    const dtype: DType = t.dtype === "float64" && !backend.supports("float64") ? "float32" : t.dtype;
    const data = dtype === t.dtype ? t.data : Float32Array.from(t.data);
    flat.set(name, fromHost(backend, data, t.shape, dtype));
  }
  return { tree: fromPaths([...flat]) as Record<string, unknown>, flat, metadata: file.metadata };
}
