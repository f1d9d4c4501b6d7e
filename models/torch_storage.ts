/**
 * PyTorch storages and the tensors that view them: the storage types, and the checked, lazy decoding of a view
 * out of an archive's raw little-endian storage bytes into a contiguous host tensor (a storage is inflated once,
 * on first use; each view's extent is checked against its storage, identical views share one host tensor, and
 * the distinct views of a storage may together read at most twice its size).
 *
 * @module
 */
import { bf16ToF32, f16ToF32 } from "./safetensors.ts";
import type { HostTensor } from "./safetensors.ts";
import type { DType } from "../ops/dtype.ts";
import { CheckpointError } from "./format.ts";
import type { ZipArchive } from "./zip.ts";

/** A storage referenced by a persistent id: a raw byte file of the archive. */
export interface StorageRef {
  /** Tag of a storage. */
  readonly kind: "storage";
  /** Storage class name, e.g. `FloatStorage`. */
  readonly type: string;
  /** File name under `data/`. */
  readonly key: string;
  /** Element count as recorded by PyTorch. */
  readonly numel: number;
}

/**
 * A tensor as described by the pickle (a view of a storage).
 *
 * @example
 * ```ts
 * import { TorchTensor } from "./mod.ts";
 * const t = new TorchTensor({ kind: "storage", type: "FloatStorage", key: "0", numel: 6 }, 0, [2, 3], [3, 1]);
 * console.log(t.storageType, t.shape); // FloatStorage [2, 3]
 * ```
 */
export class TorchTensor {
  /** A view of `storage`: element offset, sizes and strides (in elements). */
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
  /** The storage's element type, e.g. `FloatStorage`. */
  get storageType(): string {
    return this.storage.type;
  }
}

/** Element width and PyTorch dtype of each storage type. */
export const STORAGES: Record<string, { bytes: number; torch: string }> = {
  FloatStorage: { bytes: 4, torch: "float32" },
  DoubleStorage: { bytes: 8, torch: "float64" },
  HalfStorage: { bytes: 2, torch: "float16" },
  BFloat16Storage: { bytes: 2, torch: "bfloat16" },
  LongStorage: { bytes: 8, torch: "int64" },
  IntStorage: { bytes: 4, torch: "int32" },
  ShortStorage: { bytes: 2, torch: "int16" },
  CharStorage: { bytes: 1, torch: "int8" },
  ByteStorage: { bytes: 1, torch: "uint8" },
  BoolStorage: { bytes: 1, torch: "bool" },
  UntypedStorage: { bytes: 1, torch: "uint8" },
};

/** How many times its own size the distinct views of one storage may read (a full alias plus a transpose). */
const VIEW_BUDGET = 2;
/** The most dimensions a view may have. */
export const MAX_RANK = 64;

/** Calls `visit(i, offset)` for every element of a view in row-major order (offsets in elements). */
function forEachOffset(t: TorchTensor, n: number, visit: (i: number, off: number) => void): void {
  if (isContiguous(t)) {
    for (let i = 0; i < n; i++) visit(i, t.offset + i);
    return;
  }
  const rank = t.shape.length;
  const coord = new Array(rank).fill(0);
  let off = t.offset;
  for (let i = 0; i < n; i++) {
    visit(i, off);
    for (let d = rank - 1; d >= 0; d--) {
      off += t.stride[d];
      if (++coord[d] < t.shape[d]) break;
      off -= coord[d] * t.stride[d];
      coord[d] = 0;
    }
  }
}

function isContiguous(t: TorchTensor): boolean {
  for (let d = t.shape.length - 1, expect = 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expect) return false;
    expect *= t.shape[d];
  }
  return true;
}

/** Decodes a validated view out of its storage bytes into a contiguous host tensor. */
function decodeView(t: TorchTensor, n: number, raw: Uint8Array): [HostTensor, string] {
  const info = STORAGES[t.storage.type];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const shape = [...t.shape];
  const out = (dtype: DType, get: (byteOff: number) => number): HostTensor => {
    const data = dtype === "float32"
      ? new Float32Array(n)
      : dtype === "float64"
      ? new Float64Array(n)
      : dtype === "bool"
      ? new Uint8Array(n)
      : new Int32Array(n);
    forEachOffset(t, n, (i, off) => data[i] = get(off * info.bytes));
    return { dtype, shape, data };
  };
  const kind = info.torch;
  switch (kind) {
    case "float32":
      if (isContiguous(t) && (raw.byteOffset + t.offset * 4) % 4 === 0) {
        const data = new Float32Array(raw.buffer, raw.byteOffset + t.offset * 4, n).slice();
        return [{ dtype: "float32", shape, data }, kind];
      }
      return [out("float32", (o) => view.getFloat32(o, true)), kind];
    case "float64":
      return [out("float64", (o) => view.getFloat64(o, true)), kind];
    case "float16":
      return [out("float32", (o) => f16ToF32(view.getUint16(o, true))), kind];
    case "bfloat16":
      return [out("float32", (o) => bf16ToF32(view.getUint16(o, true))), kind];
    case "int64": {
      // int64 narrows to int32 when every value fits, else widens to float64.
      let fits = true;
      forEachOffset(t, n, (_, off) => {
        const v = view.getBigInt64(off * 8, true);
        if (v > 2147483647n || v < -2147483648n) fits = false;
      });
      return [out(fits ? "int32" : "float64", (o) => Number(view.getBigInt64(o, true))), kind];
    }
    case "int32":
      return [out("int32", (o) => view.getInt32(o, true)), kind];
    case "int16":
      return [out("int32", (o) => view.getInt16(o, true)), kind];
    case "int8":
      return [out("int32", (o) => view.getInt8(o)), kind];
    case "bool":
      return [out("bool", (o) => (view.getUint8(o) ? 1 : 0)), kind];
    default:
      return [out("int32", (o) => view.getUint8(o)), kind];
  }
}

/**
 * Materialises the tensors of one archive: storages are read once, on first use; every view is checked before
 * anything is allocated.
 */
export class Materializer {
  private storages = new Map<string, Uint8Array>();
  private used = new Map<string, number>(); // elements read from each storage by distinct views
  private views = new Map<string, [HostTensor, string]>();

  constructor(private zip: ZipArchive, private base: string, private file: string) {}

  tensor(t: TorchTensor, name: string): [HostTensor, string] {
    const fail = (what: string): never => {
      throw new CheckpointError(`${this.file}: tensor '${name}' ${what}`);
    };
    const { storage: s, offset, shape, stride } = t;
    const info = STORAGES[s.type];
    const isCount = (x: number) => Number.isSafeInteger(x) && x >= 0;
    if (shape.length > MAX_RANK || shape.length !== stride.length) {
      fail(`has shape [${shape.slice(0, 8)}] and stride [${stride.slice(0, 8)}] of different or absurd ranks`);
    }
    if (!isCount(offset) || !shape.every(isCount) || !stride.every(isCount)) {
      fail(`has a bad view: shape [${shape}] stride [${stride}] offset ${offset}`);
    }
    const n = shape.reduce((a, b) => a * b, 1);
    const last = n === 0 ? -1 : shape.reduce((acc, d, i) => acc + (d - 1) * stride[i], offset);
    if (last >= s.numel) {
      fail(
        `[${shape}] stride [${stride}] offset ${offset} reaches element ${last} of its storage ` +
          `data/${s.key}, which holds ${s.numel}`,
      );
    }
    const id = `${s.key}|${offset}|${shape}|${stride}`;
    const known = this.views.get(id);
    if (known) return known;
    const used = (this.used.get(s.key) ?? 0) + n;
    if (used > VIEW_BUDGET * Math.max(1, s.numel)) {
      fail(
        `[${shape}] stride [${stride}] would read ${n} elements of storage data/${s.key}, which holds ${s.numel} ` +
          `(its views may read at most ${VIEW_BUDGET}x its size): the file claims more data than it holds`,
      );
    }
    const entryName = `${this.base}data/${s.key}`;
    const entry = this.zip.entries.get(entryName);
    if (!entry) fail(`refers to the missing storage ${entryName}`);
    const want = s.numel * info.bytes;
    if (entry!.size < want) {
      fail(
        `refers to storage ${entryName}, declared as ${s.numel} ${s.type} elements (${want} bytes), ` +
          `but the archive entry holds ${entry!.size} bytes`,
      );
    }
    let raw = this.storages.get(s.key);
    if (!raw) {
      raw = this.zip.read(entry!);
      this.storages.set(s.key, raw);
    }
    this.used.set(s.key, used);
    const result = decodeView(t, n, raw);
    this.views.set(id, result);
    return result;
  }
}
