/**
 * Reading the zip archive of a `.pth` without trusting it: the central directory (zip64 included) is parsed with
 * every count, size and offset checked against the file, and an entry is only read when asked for. Stored
 * entries (what `torch.save` writes) are views of the file; deflated ones are inflated in small steps that stop
 * as soon as the output passes the size the entry declares, and once the entries inflated from one archive would
 * exceed a plausible compression ratio of the whole file, the next is refused before anything is inflated (a zip
 * bomb).
 *
 * @module
 */
import { Inflate } from "npm:fflate@0.8.3";
import { CheckpointError } from "./format.ts";

/** One file of the archive, as its central directory describes it. */
export interface ZipEntry {
  /** Its path in the archive. */
  readonly name: string;
  /** 0 (stored) or 8 (deflated). */
  readonly method: number;
  /** Bytes in the archive. */
  readonly compressedSize: number;
  /** Bytes once inflated, as declared. */
  readonly size: number;
  /** Where its data start in the file. */
  readonly dataStart: number;
}

/** What one archive may inflate in total: this many times its size (deflate's own limit is about 1032)... */
export const MAX_DEFLATE_RATIO = 100;
/** ... or this many bytes, whichever is more (a small re-zipped file may hold a few MB of zeros). */
export const MIN_INFLATE_BUDGET = 64 * 2 ** 20;
const INFLATE_STEP = 4096; // input bytes per step: at most ~4 MB of output before the size check

const u16 = (v: DataView, at: number) => v.getUint16(at, true);
const u32 = (v: DataView, at: number) => v.getUint32(at, true);
function u64(v: DataView, at: number): number {
  const x = v.getBigUint64(at, true);
  return x > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(x);
}

/** A zip archive's directory over the bytes of the file; `read` gives one entry's contents. */
export class ZipArchive {
  /** The entries by name, in directory order. */
  readonly entries: Map<string, ZipEntry> = new Map();
  /** Bytes deflated entries may still inflate to. */
  inflateBudget: number;
  private view: DataView;

  /** Parses the central directory of `bytes`; `file` names the archive in errors. */
  constructor(readonly bytes: Uint8Array, readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.inflateBudget = Math.max(MIN_INFLATE_BUDGET, MAX_DEFLATE_RATIO * bytes.byteLength);
    const v = this.view;
    const n = bytes.byteLength;
    // The end-of-central-directory record: 22 bytes plus a comment of at most 65535.
    let eocd = -1;
    for (let i = n - 22; i >= Math.max(0, n - 22 - 65535); i--) {
      if (u32(v, i) === 0x06054b50) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) this.fail("corrupt zip archive (no end of central directory)");
    let count = u16(v, eocd + 10);
    let cdSize = u32(v, eocd + 12);
    let cdStart = u32(v, eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdStart === 0xffffffff) {
      // Zip64: a locator just before the record points at the zip64 end-of-central-directory record.
      const loc = eocd - 20;
      if (loc < 0 || u32(v, loc) !== 0x07064b50) this.fail("corrupt zip64 archive (no locator)");
      const rec = u64(v, loc + 8);
      if (!(rec + 56 <= loc) || u32(v, rec) !== 0x06064b50) this.fail("corrupt zip64 end of central directory");
      count = u64(v, rec + 32);
      cdSize = u64(v, rec + 40);
      cdStart = u64(v, rec + 48);
    }
    if (!(cdStart + cdSize <= n) || count * 46 > cdSize) {
      this.fail(`corrupt zip central directory (${count} entries, ${cdSize} bytes at ${cdStart}, file ${n} bytes)`);
    }
    let at = cdStart;
    for (let k = 0; k < count; k++) {
      if (at + 46 > cdStart + cdSize || u32(v, at) !== 0x02014b50) this.fail(`corrupt zip directory entry ${k}`);
      const method = u16(v, at + 10);
      let compressedSize = u32(v, at + 20);
      let size = u32(v, at + 24);
      const nameLen = u16(v, at + 28), extraLen = u16(v, at + 30), commentLen = u16(v, at + 32);
      let local = u32(v, at + 42);
      const next = at + 46 + nameLen + extraLen + commentLen;
      if (next > cdStart + cdSize) this.fail(`corrupt zip directory entry ${k} (runs past the directory)`);
      const name = new TextDecoder().decode(bytes.subarray(at + 46, at + 46 + nameLen));
      // Zip64 extra field: the 64-bit values of the fields that hold 0xffffffff, in this order.
      for (let e = at + 46 + nameLen; e + 4 <= at + 46 + nameLen + extraLen;) {
        const id = u16(v, e), len = u16(v, e + 2);
        if (e + 4 + len > at + 46 + nameLen + extraLen) break;
        if (id === 0x0001) {
          let p = e + 4;
          const next64 = () => {
            if (p + 8 > e + 4 + len) this.fail(`corrupt zip64 field of '${name}'`);
            const x = u64(v, p);
            p += 8;
            return x;
          };
          if (size === 0xffffffff) size = next64();
          if (compressedSize === 0xffffffff) compressedSize = next64();
          if (local === 0xffffffff) local = next64();
        }
        e += 4 + len;
      }
      if (!(local + 30 <= n) || u32(v, local) !== 0x04034b50) this.fail(`corrupt local header of '${name}'`);
      const dataStart = local + 30 + u16(v, local + 26) + u16(v, local + 28);
      if (!(dataStart + compressedSize <= n)) {
        this.fail(`'${name}' claims ${compressedSize} bytes at ${dataStart}, past the end of the ${n}-byte file`);
      }
      if (method !== 0 && method !== 8) this.fail(`'${name}' uses the unsupported zip compression method ${method}`);
      if (method === 0 && size !== compressedSize) {
        this.fail(`'${name}' is stored (not compressed) but declares ${size} bytes for ${compressedSize}`);
      }
      if (this.entries.has(name)) this.fail(`the archive has two entries named '${name}'`);
      this.entries.set(name, { name, method, compressedSize, size, dataStart });
      at = next;
    }
  }

  private fail(what: string): never {
    throw new CheckpointError(`${this.file}: ${what}`);
  }

  /**
   * The contents of `entry`: a view of the file when stored, else inflated, never past its declared size nor past
   * what is left of the archive's inflate budget.
   */
  read(entry: ZipEntry): Uint8Array {
    const raw = this.bytes.subarray(entry.dataStart, entry.dataStart + entry.compressedSize);
    if (entry.method === 0) return raw;
    if (entry.size > this.inflateBudget) {
      this.fail(
        `'${entry.name}' declares ${entry.size} bytes inflated from ${entry.compressedSize}, more than the ` +
          `${this.inflateBudget} bytes left of what this ${this.bytes.byteLength}-byte archive may inflate ` +
          `(${MAX_DEFLATE_RATIO}x its size, at least ${MIN_INFLATE_BUDGET}): refused as a likely zip bomb`,
      );
    }
    this.inflateBudget -= entry.size;
    const out = new Uint8Array(entry.size);
    let filled = 0;
    const inflate = new Inflate((chunk) => {
      if (filled + chunk.length > entry.size) {
        this.fail(`'${entry.name}' inflates to more than the ${entry.size} bytes it declares`);
      }
      out.set(chunk, filled);
      filled += chunk.length;
    });
    try {
      for (let p = 0; p < raw.length; p += INFLATE_STEP) {
        const end = Math.min(raw.length, p + INFLATE_STEP);
        inflate.push(raw.subarray(p, end), end === raw.length);
      }
      if (raw.length === 0) inflate.push(raw, true);
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      this.fail(`'${entry.name}' is not valid deflate data (${(e as Error).message})`);
    }
    if (filled !== entry.size) {
      this.fail(`'${entry.name}' inflates to ${filled} bytes but declares ${entry.size}`);
    }
    return out;
  }
}
