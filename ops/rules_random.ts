/** Counter-based random bits: Threefry-2x32 (20 rounds), identical on the CPU and in WGSL. */
import { allocHost } from "./dtype.ts";
import type { Rule } from "./rule.ts";
import { fmt, size } from "./shape.ts";
import { perThreadKernel, WG } from "../wgsl/codegen.ts";

const ROT = [[13, 15, 26, 6], [17, 29, 16, 24]];

function rotl(x: number, r: number): number {
  return ((x << r) | (x >>> (32 - r))) >>> 0;
}

/** Threefry-2x32 block function: key (k0, k1), counter (c0, c1) -> two random words. */
export function threefry2x32(k0: number, k1: number, c0: number, c1: number): [number, number] {
  const ks = [k0 >>> 0, k1 >>> 0, (k0 ^ k1 ^ 0x1BD11BDA) >>> 0];
  let x0 = (c0 + ks[0]) >>> 0;
  let x1 = (c1 + ks[1]) >>> 0;
  for (let i = 0; i < 5; i++) {
    for (const r of ROT[i & 1]) {
      x0 = (x0 + x1) >>> 0;
      x1 = rotl(x1, r);
      x1 = (x1 ^ x0) >>> 0;
    }
    x0 = (x0 + ks[(i + 1) % 3]) >>> 0;
    x1 = (x1 + ks[(i + 2) % 3] + i + 1) >>> 0;
  }
  return [x0, x1];
}

/**
 * `randomBits(key)[i] = threefry(key, (i, 0))[0]`: element i depends only on the key and i. A batch of keys
 * `[n, 2]` gives `n` rows of `size(shape) / n` elements (`shape[0] = n`), row j drawn from key j as one key would.
 */
export const randomBitsRule: Rule<"randomBits"> = {
  arity: 1,
  shape: ([key], { shape }) => {
    const batched = key.shape.length === 2 && shape.length > 0 && shape[0] === key.shape[0];
    if (key.dtype !== "uint32" || key.shape[key.shape.length - 1] !== 2 || !(key.shape.length === 1 || batched)) {
      const batch = key.shape.length === 2 ? ` or a batch uint32[n,2] with an output [n, ...] (got ${fmt(shape)})` : "";
      throw new TypeError(`randomBits: key must be uint32[2]${batch}, got ${key.dtype}${fmt(key.shape)}`);
    }
    if (size(shape) > 2 ** 32) throw new RangeError(`randomBits: ${fmt(shape)} has more than 2^32 elements`);
    return { shape, dtype: "uint32" };
  },
  cpu: ([key], _a, _p, out) => {
    const n = size(out.shape);
    const res = allocHost("uint32", n);
    const rows = key.length / 2;
    const per = n / rows;
    for (let j = 0; j < rows; j++) {
      for (let i = 0; i < per; i++) res[j * per + i] = threefry2x32(key[2 * j], key[2 * j + 1], i, 0)[0];
    }
    return res;
  },
  vjp: () => [null],
  wgsl: {
    kind: "kernel",
    build: (ins, out) => {
      const n = size(out.shape);
      const rows = ins[0].shape.length === 2 ? ins[0].shape[0] : 1;
      const per = n / rows;
      const body = rows === 1
        ? `out[gid] = threefry2x32(in0[0], in0[1], gid, 0u).x;`
        : `let j = gid / ${per}u; out[gid] = threefry2x32(in0[2u * j], in0[2u * j + 1u], gid - j * ${per}u, 0u).x;`;
      return { code: perThreadKernel(["uint32"], "uint32", n, body), threads: n, workgroupSize: WG };
    },
  },
};
