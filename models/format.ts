/**
 * Telling checkpoint formats apart by their first bytes, and the error every checkpoint reader throws.
 *
 * @module
 */
import { InputError } from "../errors.ts";

/**
 * A checkpoint file that cannot be read safely: wrong format, corrupt or hostile contents. The message names the
 * file and the entry, key or tensor at fault.
 *
 * @example
 * ```ts
 * import { CheckpointError, parseSafetensors } from "./mod.ts";
 * try {
 *   parseSafetensors(new Uint8Array(3), "w.safetensors");
 * } catch (e) {
 *   console.log(e instanceof CheckpointError); // true
 * }
 * ```
 */
export class CheckpointError extends InputError {
  /** Always `"CheckpointError"`. */
  override name = "CheckpointError";
}

/** The formats `sniffFormat` recognises. */
export type CheckpointFormat = "pth" | "legacy-pth" | "pickle" | "safetensors" | "unknown";

// torch.save before 1.6 starts with the pickled magic number 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 10 bytes).
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/**
 * The format of checkpoint bytes: `pth` (a zip, `PK\x03\x04`), `legacy-pth` (pre-1.6 `torch.save`), `pickle` (a
 * bare pickle), `safetensors` (an 8-byte header length that fits the file, then `{`) or `unknown`.
 *
 * @example
 * ```ts
 * import { sniffFormat } from "./mod.ts";
 * console.log(sniffFormat(new Uint8Array([0x50, 0x4b, 3, 4]))); // pth
 * ```
 */
export function sniffFormat(bytes: Uint8Array): CheckpointFormat {
  const starts = (magic: readonly number[]) => bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
  if (starts([0x50, 0x4b, 0x03, 0x04])) return "pth";
  if (starts(LEGACY_MAGIC)) return "legacy-pth";
  // Before the pickle test: a safetensors header of 640 + 65536·k bytes starts with 0x80 0x02 too.
  if (bytes.length >= 10) {
    const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    if (n >= 2n && n <= BigInt(bytes.length - 8) && bytes[8] === 0x7b) return "safetensors";
  }
  if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] >= 2 && bytes[1] <= 5) return "pickle";
  return "unknown";
}

const DESCRIBE: Record<CheckpointFormat, string> = {
  "pth": "a PyTorch .pth checkpoint (zip)",
  "legacy-pth": "a legacy (pre-1.6) PyTorch checkpoint, which is not supported: re-save it with a recent PyTorch " +
    "(torch.save(torch.load(f), f))",
  "pickle": "a bare Python pickle, not a zip-format PyTorch checkpoint",
  "safetensors": "a safetensors file",
  "unknown": "neither",
};

const EXPECTED = {
  pth: "a PyTorch .pth checkpoint (zip)",
  safetensors: "a safetensors file",
  checkpoint: "a PyTorch .pth checkpoint (zip) or a safetensors file",
};

/**
 * Throws a `CheckpointError` unless `bytes` are of the `expected` format (`checkpoint`: either), saying what they
 * are instead.
 */
export function expectFormat(bytes: Uint8Array, expected: keyof typeof EXPECTED, file: string): void {
  const got = sniffFormat(bytes);
  if (got === expected || (expected === "checkpoint" && (got === "pth" || got === "safetensors"))) return;
  const want = EXPECTED[expected];
  const hex = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  const what = got !== "unknown" ? DESCRIBE[got] : hex ? `neither (it starts with ${hex})` : "an empty file";
  throw new CheckpointError(`${file}: expected ${want}, but this is ${what}`);
}

/** The `CheckpointError` for a checkpoint file that cannot be opened or read: it names the file and the cause. */
export function unreadable(path: string, e: unknown): CheckpointError {
  return new CheckpointError(`checkpoint '${path}' cannot be read: ${(e as Error).message}`);
}

/** A checkpoint file's bytes, or a `CheckpointError` naming the file when it cannot be read. */
export async function readCheckpointBytes(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw unreadable(path, e);
  }
}
