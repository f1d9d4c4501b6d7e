/**
 * The byte-level reader of the unpickler: every length it is given is checked against what remains, so a hostile
 * length (negative, or past the end) fails at once instead of looping or allocating.
 *
 * @module
 */
import { CheckpointError } from "./format.ts";

// Python ints in a weights file are small; a longer LONG would only cost quadratic time.
export const MAX_LONG_BYTES = 256;
const MAX_NUMBER_LINE = 400;

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

export class Reader {
  pos = 0;
  private view: DataView;
  constructor(readonly bytes: Uint8Array, readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get left(): number {
    return this.bytes.byteLength - this.pos;
  }
  /** Checks that `n` (a length read from the stream) is a count that the rest of the stream holds. */
  need(n: number, what = "value"): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.left) {
      throw new CheckpointError(
        `${this.file}: pickle ${what} of length ${n} at byte ${this.pos} does not fit the ${this.left} bytes left`,
      );
    }
  }
  u8(): number {
    this.need(1);
    return this.bytes[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = Number(this.view.getBigUint64(this.pos, true)); // beyond 2^53 it is refused by `need`
    this.pos += 8;
    return v;
  }
  f64be(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, false);
    this.pos += 8;
    return v;
  }
  /** `n` bytes, `n` having been read from the stream (so it may be negative or huge: `need` refuses those). */
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const b = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new CheckpointError(`${this.file}: truncated pickle (no end of line) at byte ${this.pos}`);
    const s = latin1.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
  /** A protocol-0 decimal integer line (`I`, `L`, `PUT`, `GET`). */
  intLine(): bigint {
    const at = this.pos;
    return this.parseInt(this.line(), at);
  }
  parseInt(line: string, at: number): bigint {
    const s = line.replace(/L$/, "");
    if (s.length > MAX_NUMBER_LINE || !/^[+-]?\d+$/.test(s)) {
      throw new CheckpointError(`${this.file}: bad pickle integer '${s.slice(0, 40)}' at byte ${at}`);
    }
    return BigInt(s);
  }
}

const text = (d: TextDecoder) => (b: Uint8Array) => d.decode(b);
const copy = (b: Uint8Array) => b.slice();
/** Length-prefixed opcodes: name, length (a signed one for BINSTRING: `take` refuses negatives), decoder. */
export const SIZED: Record<number, [string, (r: Reader) => number, (b: Uint8Array) => unknown]> = {
  0x58: ["BINUNICODE", (r) => r.u32(), text(utf8)],
  0x8c: ["SHORT_BINUNICODE", (r) => r.u8(), text(utf8)],
  0x8d: ["BINUNICODE8", (r) => r.u64(), text(utf8)],
  0x54: ["BINSTRING", (r) => r.i32(), text(latin1)],
  0x55: ["SHORT_BINSTRING", (r) => r.u8(), text(latin1)],
  0x42: ["BINBYTES", (r) => r.u32(), copy],
  0x43: ["SHORT_BINBYTES", (r) => r.u8(), copy],
  0x8e: ["BINBYTES8", (r) => r.u64(), copy],
  0x96: ["BYTEARRAY8", (r) => r.u64(), copy],
};

/** Two's-complement little-endian integer of any width. */
export function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let hex = "";
  for (let i = b.length - 1; i >= 0; i--) hex += b[i].toString(16).padStart(2, "0");
  let v = BigInt(`0x${hex}`);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return narrow(v);
}

export function narrow(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}
