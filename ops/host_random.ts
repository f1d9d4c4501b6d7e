/**
 * The host side of the PRNG: Threefry-2x32 keys and streams computed on the CPU with the same block function as
 * the device (`rules_random.ts`), so that masks, datasets, splits and epoch shuffles are deterministic
 * functions of a seed and need no device reads. `seedKey`, `split` and `foldIn` give exactly the keys of
 * `random.key`, `random.split` and `random.foldIn`; draw n of `HostRng(k)` is element n of
 * `random.randomBits(k, [..])`, and its `uniform()` equals element n of `random.uniform(k, [..])`. Also Python's
 * `round`, which the official samplers use on host numbers.
 *
 * @module
 */
import type { Tensor } from "./tensor.ts";
import { threefry2x32 } from "./rules_random.ts";

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
  return seedWords(seed);
}

/** The key words of an integer seed, unchecked: its high and low 32 bits (what `random.key` stores). */
export function seedWords(seed: number): Key {
  return [Math.floor(seed / 2 ** 32) >>> 0, seed >>> 0];
}

/** The key of `random.foldIn(key, data)`. */
export function foldIn(key: Key, data: number): Key {
  const k1 = (key[1] + (data >>> 0)) >>> 0;
  return [threefry2x32(key[0], k1, 0, 0)[0], threefry2x32(key[0], k1, 1, 0)[0]];
}

/**
 * The keys of `random.split(key, n)`, on the host.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const [k1, k2] = masking.hostSplit(masking.hostKey(0)); // the keys of random.split(random.key(0))
 * ```
 */
export function split(key: Key, n = 2): Key[] {
  return Array.from({ length: n }, (_, i) => [
    threefry2x32(key[0], key[1], 2 * i, 0)[0],
    threefry2x32(key[0], key[1], 2 * i + 1, 0)[0],
  ]);
}

/**
 * Reads a device key (uint32[2]) to the host (one readback).
 *
 * @example
 * ```ts
 * import { masking, random } from "./mod.ts";
 * console.log(await masking.readKey(random.key(7))); // [0, 7]
 * ```
 */
export async function readKey(key: Tensor): Promise<Key> {
  if (key.dtype !== "uint32" || key.size !== 2) throw new TypeError(`readKey: expected a uint32[2] key, got ${key}`);
  const d = await key.data();
  return [d[0] >>> 0, d[1] >>> 0];
}

/**
 * A host stream of random numbers from a key: draw n is `threefry(key, (n, 0))[0]`, i.e. element n of
 * `random.randomBits(key, [..])`; `uniform()` uses its top 24 bits exactly as `random.uniform`.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * const rng = new masking.HostRng(masking.hostKey(0));
 * const u = rng.uniform(); // in [0, 1)
 * const die = rng.randint(1, 6); // in 1..6
 * ```
 */
export class HostRng {
  private counter = 0;
  /** A stream at draw 0 of `key`. */
  constructor(readonly key: Key) {}

  /** The next raw uint32. */
  bits(): number {
    if (this.counter >= 2 ** 32) throw new RangeError("HostRng: stream exhausted (2^32 draws)");
    return threefry2x32(this.key[0], this.key[1], this.counter++, 0)[0];
  }

  /** Uniform in [0, 1) with 24 random bits. */
  uniform(): number {
    return (this.bits() >>> 8) * 2 ** -24;
  }

  /** Python's `random.uniform(a, b)`: `a + (b − a)·u` (also when b < a). */
  uniformIn(a: number, b: number): number {
    return a + (b - a) * this.uniform();
  }

  /** Python's `random.randint(a, b)`: an integer in [a, b], both inclusive. */
  randint(a: number, b: number): number {
    return Math.min(a + Math.floor(this.uniform() * (b - a + 1)), b);
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

/**
 * Python's `round`: to the nearest integer, ties to even.
 *
 * @example
 * ```ts
 * import { masking } from "./mod.ts";
 * console.log(masking.pyRound(2.5), masking.pyRound(3.5), masking.pyRound(2.6)); // 2 4 3
 * ```
 */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
