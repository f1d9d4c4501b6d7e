/**
 * Builders of small `.pth` files for tests: a pickle writer with the opcodes `torch.save` uses, and a zip writer
 * (stored or raw-deflated entries, sizes as declared by the caller, so that a test can lie about them).
 */

const enc = new TextEncoder();

/** A pickle assembled opcode by opcode. */
export class Pickle {
  private parts: number[] = [];
  /** Raw bytes. */
  raw(...bytes: number[]): this {
    this.parts.push(...bytes);
    return this;
  }
  private le(n: number, width: number): number[] {
    const b = new Uint8Array(width);
    const v = new DataView(b.buffer);
    if (width === 4) v.setInt32(0, n, true);
    else if (width === 8) v.setBigUint64(0, BigInt(n), true);
    else b[0] = n;
    return [...b];
  }
  proto(p = 2): this {
    return this.raw(0x80, p);
  }
  mark(): this {
    return this.raw(0x28);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  emptyTuple(): this {
    return this.raw(0x29);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  setitems(): this {
    return this.raw(0x75);
  }
  setitem(): this {
    return this.raw(0x73);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  binpersid(): this {
    return this.raw(0x51);
  }
  newfalse(): this {
    return this.raw(0x89);
  }
  stop(): this {
    return this.raw(0x2e);
  }
  /** BININT (signed 32-bit). */
  int(n: number): this {
    return this.raw(0x4a, ...this.le(n, 4));
  }
  /** BINUNICODE. */
  str(s: string): this {
    const b = enc.encode(s);
    return this.raw(0x58, ...this.le(b.length, 4), ...b);
  }
  /** GLOBAL `module name`. */
  global(module: string, name: string): this {
    return this.raw(0x63, ...enc.encode(`${module}\n${name}\n`));
  }
  /** A tuple of ints. */
  ints(xs: number[]): this {
    this.mark();
    for (const x of xs) this.int(x);
    return this.tuple();
  }
  /** `torch._utils._rebuild_tensor_v2(storage(key, numel), offset, shape, stride, False, OrderedDict())`. */
  tensor(t: TensorSpec): this {
    this.global("torch._utils", "_rebuild_tensor_v2").mark();
    this.mark().str("storage").global("torch", t.type ?? "FloatStorage").str(t.key).str("cpu").int(t.numel).tuple();
    this.binpersid().int(t.offset ?? 0).ints(t.shape).ints(t.stride ?? contiguousStride(t.shape)).newfalse();
    return this.global("collections", "OrderedDict").emptyTuple().reduce().tuple().reduce();
  }
  bytes(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

/** A tensor of a built pickle: a view of storage `key`. */
export interface TensorSpec {
  key: string;
  numel: number;
  shape: number[];
  stride?: number[];
  offset?: number;
  type?: string;
}

function contiguousStride(shape: number[]): number[] {
  const s = shape.map(() => 1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

/** The pickle of `{name: tensor, ...}` as `torch.save` writes a state dict. */
export function stateDictPickle(tensors: Record<string, TensorSpec>): Uint8Array {
  const p = new Pickle().proto().emptyDict().mark();
  for (const [name, t] of Object.entries(tensors)) p.str(name).tensor(t);
  return p.setitems().stop().bytes();
}

/** One entry of `zip`: stored bytes, or raw-deflate bytes with the sizes to declare. */
export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** Raw deflate data: `data` is compressed and `size` is the declared inflated size. */
  deflated?: boolean;
  size?: number;
}

/**
 * A zip archive of `entries` (no data descriptors, CRCs left 0: the reader does not check them). With `zip64`,
 * the sizes and offsets go in zip64 extra fields and a zip64 end-of-directory record, the 32-bit fields holding
 * 0xffffffff, as large archives have them.
 */
export function zip(entries: ZipInput[], zip64 = false): Uint8Array {
  const local: number[] = [];
  const central: number[] = [];
  const push = (to: number[], n: number, width: 2 | 4 | 8) => {
    for (let i = 0; i < width; i++) to.push(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn));
  };
  const big = (n: number) => zip64 ? 0xffffffff : n;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const size = e.size ?? e.data.length;
    const offset = local.length;
    const header = (to: number[], sig: number, central: boolean) => {
      const extra = central && zip64 ? [0x01, 0, 24, 0] : [];
      if (extra.length) [size, e.data.length, offset].forEach((n) => push(extra, n, 8));
      push(to, sig, 4);
      if (central) push(to, 20, 2);
      push(to, 20, 2); // version needed
      push(to, 0, 2); // flags
      push(to, e.deflated ? 8 : 0, 2);
      push(to, 0, 4); // time, date
      push(to, 0, 4); // crc
      push(to, central ? big(e.data.length) : e.data.length, 4);
      push(to, central ? big(size) : size, 4);
      push(to, name.length, 2);
      push(to, extra.length, 2);
      if (central) {
        push(to, 0, 2); // comment
        push(to, 0, 4); // disk, internal attributes
        push(to, 0, 4); // external attributes
        push(to, big(offset), 4);
      }
      to.push(...name, ...extra);
    };
    header(local, 0x04034b50, false);
    for (let i = 0; i < e.data.length; i += 65536) local.push(...e.data.subarray(i, i + 65536));
    header(central, 0x02014b50, true);
  }
  const end: number[] = [];
  if (zip64) {
    const record = local.length + central.length;
    push(end, 0x06064b50, 4);
    push(end, 44, 8); // size of the rest of the record
    push(end, 45, 2), push(end, 45, 2), push(end, 0, 4), push(end, 0, 4); // versions, disks
    push(end, entries.length, 8), push(end, entries.length, 8), push(end, central.length, 8);
    push(end, local.length, 8);
    push(end, 0x07064b50, 4), push(end, 0, 4), push(end, record, 8), push(end, 1, 4); // the locator
  }
  push(end, 0x06054b50, 4);
  push(end, 0, 4);
  push(end, zip64 ? 0xffff : entries.length, 2);
  push(end, zip64 ? 0xffff : entries.length, 2);
  push(end, big(central.length), 4);
  push(end, big(local.length), 4);
  push(end, 0, 2);
  const out = new Uint8Array(local.length + central.length + end.length);
  out.set(local);
  out.set(central, local.length);
  out.set(end, local.length + central.length);
  return out;
}

/** A `.pth` zip: `archive/data.pkl`, `archive/data/<key>` for each storage, `archive/byteorder`. */
export function pthZip(pickle: Uint8Array, storages: Record<string, Uint8Array | ZipInput> = {}): Uint8Array {
  return zip([
    { name: "archive/data.pkl", data: pickle },
    { name: "archive/byteorder", data: enc.encode("little") },
    ...Object.entries(storages).map(([key, s]) =>
      s instanceof Uint8Array ? { name: `archive/data/${key}`, data: s } : { ...s, name: `archive/data/${key}` }
    ),
  ]);
}

/** Raw-deflates `total` zero bytes (streamed in 1 MiB chunks). */
export async function deflatedZeros(total: number): Promise<Uint8Array> {
  const cs = new CompressionStream("deflate-raw");
  const writer = cs.writable.getWriter();
  const chunk = new Uint8Array(Math.min(total, 1 << 20));
  const writing = (async () => {
    for (let left = total; left > 0; left -= chunk.length) {
      await writer.write(chunk.subarray(0, Math.min(left, chunk.length)));
    }
    await writer.close();
  })();
  const out = new Uint8Array(await new Response(cs.readable).arrayBuffer());
  await writing;
  return out;
}
