/**
 * Host-side Threefry-2x32 streams for the data pipeline (the same block function as the device PRNG), so that
 * datasets, splits and epoch shuffles are deterministic functions of a seed.
 *
 * @module
 */
import { threefry2x32 } from "../../ops/rules_random.ts";

/** A key as two uint32 words (what `random.key(seed)` holds on the device). */
export type Key = readonly [number, number];

/**
 * The key of `random.key(seed)`: the seed's high and low 32 bits. Seeds must be exact integers (|seed| <= 2^53 - 1);
 * beyond that distinct seeds would round to one key.
 */
export function seedKey(seed: number): Key {
  if (!Number.isInteger(seed)) throw new TypeError(`seed must be an integer, got ${seed}`);
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`seed ${seed} is outside the exact integers [-(2^53 - 1), 2^53 - 1] that a key holds`);
  }
  return [Math.floor(seed / 2 ** 32) >>> 0, seed >>> 0];
}

/** The key of `random.foldIn(key, data)`. */
export function foldIn(key: Key, data: number): Key {
  const k1 = (key[1] + (data >>> 0)) >>> 0;
  return [threefry2x32(key[0], k1, 0, 0)[0], threefry2x32(key[0], k1, 1, 0)[0]];
}

/** Draw n of a key is `threefry(key, (n, 0))[0]`, i.e. element n of `random.randomBits(key, [...])`. */
export class Stream {
  private n = 0;
  /** A stream at draw 0 of `key`. */
  constructor(readonly key: Key) {}

  /** The next raw uint32. */
  bits(): number {
    return threefry2x32(this.key[0], this.key[1], this.n++, 0)[0];
  }

  /** Uniform in [0, 1) with 24 random bits (as `random.uniform`). */
  uniform(): number {
    return (this.bits() >>> 8) * 2 ** -24;
  }

  /** Uniform in [a, b). */
  range(a: number, b: number): number {
    return a + (b - a) * this.uniform();
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.min(Math.floor(this.uniform() * n), n - 1);
  }

  /** A standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

/**
 * A permutation of `0..n-1` ranking `randomBits(key, [n])` (ties by index): exactly
 * `random.permutation(key, n)` on the device, in O(n log n) on the host.
 */
export function permutation(key: Key, n: number): Int32Array {
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = threefry2x32(key[0], key[1], i, 0)[0];
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => bits[a] - bits[b] || a - b);
  // rank[i] = position of i; random.permutation scatters i to its rank, so out[rank[i]] = i: exactly idx.
  return idx;
}
