/**
 * Mask generation (train/masking.ts): the host Threefry stream equals the device PRNG; block masks keep the
 * official bounds (count ≤ ⌊high⌋, accepted blocks add 1..remaining cells, strict h < Gh and w < Gw, target
 * area ≥ the minimum block area whenever the remaining count allows it); the statistics of spec §5.3; the
 * per-crop prediction ratio and pred_start_epoch; rand masks; determinism per key; bool tensors on both backends;
 * the masked-row selection of the sparse MIM loss and its capacities.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4.10.2";
import { cpu, random } from "../mod.ts";
import {
  blockMask,
  type BlockRecord,
  hostFoldIn,
  hostKey,
  HostRng,
  hostSplit,
  maskCapacity,
  maskSelection,
  minBlockArea,
  pyRound,
  randMask,
  readKey,
  sampleCropMasks,
  sampleMask,
  sampleMasks,
  sampleMasksHost,
  samplePredRatio,
} from "../train/masking.ts";
import { gpu, readAll, RUNS } from "./util.ts";

const count = (m: Uint8Array) => m.reduce((a, b) => a + b, 0);

Deno.test("host PRNG: hostKey / hostSplit / hostFoldIn / HostRng equal random.key / split / foldIn / uniform on CPU and WebGPU", async () => {
  for (const backend of [cpu, await gpu()]) {
    for (const seed of [0, 1, 123456789, 2 ** 40 + 5]) {
      const k = random.key(seed, backend);
      assert.deepEqual(await readKey(k), hostKey(seed));
      const dev = random.split(k, 3);
      const devFold = random.foldIn(k, 77);
      const u = random.uniform(k, [64]);
      const [d0, d1, d2, f, ud] = await readAll([...dev, devFold, u]);
      const host = hostSplit(hostKey(seed), 3);
      assert.deepEqual([Array.from(d0), Array.from(d1), Array.from(d2)], host.map((h) => [...h]));
      assert.deepEqual(Array.from(f), [...hostFoldIn(hostKey(seed), 77)]);
      const rng = new HostRng(hostKey(seed));
      assert.deepEqual(Array.from(ud), Array.from({ length: 64 }, () => rng.uniform()));
    }
  }
});

Deno.test("pyRound rounds half to even; randint is inclusive", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3].map(pyRound), [0, 2, 2, 0, -2, 2, 3, 3]);
  const rng = new HostRng(hostKey(3));
  const seen = new Set(Array.from({ length: 400 }, () => rng.randint(2, 5)));
  assert.deepEqual([...seen].sort(), [2, 3, 4, 5]);
});

Deno.test("block masks: official bounds for random grids, targets and keys", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 16 }),
      fc.integer({ min: 1, max: 16 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.integer({ min: 0, max: 2 ** 31 }),
      (gh, gw, frac, seed) => {
        const high = frac * gh * gw;
        const low = minBlockArea(gh, gw);
        const blocks: BlockRecord[] = [];
        const mask = blockMask(new HostRng(hostKey(seed)), gh, gw, high, { onBlock: (b) => blocks.push(b) });
        assert.equal(mask.length, gh * gw);
        assert.ok(count(mask) <= Math.floor(high), `count ${count(mask)} > floor(${high})`);
        const cover = new Uint8Array(gh * gw);
        let placed = 0;
        for (const b of blocks) {
          // The minimum-area rule: the target is drawn between `low` and the remaining count.
          assert.ok(b.target >= Math.min(low, b.remaining) && b.target <= Math.max(low, b.remaining), "target range");
          if (b.remaining >= low) assert.ok(b.target >= low, "target ≥ minimum block area");
          assert.equal(b.h, pyRound(Math.sqrt(b.target * b.aspect)));
          assert.equal(b.w, pyRound(Math.sqrt(b.target / b.aspect)));
          assert.ok(b.aspect >= 0.3 - 1e-12 && b.aspect <= 1 / 0.3 + 1e-12, "aspect range");
          assert.ok(b.h >= 1 && b.w >= 1 && b.h < gh && b.w < gw, "strict fit");
          assert.ok(b.top >= 0 && b.left >= 0 && b.top + b.h <= gh && b.left + b.w <= gw, "inside the grid");
          assert.ok(b.added > 0 && b.added <= b.remaining, "adds 1..remaining cells");
          for (let i = b.top; i < b.top + b.h; i++) for (let j = b.left; j < b.left + b.w; j++) cover[i * gw + j] = 1;
          placed += b.added;
        }
        assert.deepEqual(Array.from(mask), Array.from(cover), "the mask is the union of the placed blocks");
        assert.equal(placed, count(mask));
        // Same key, same mask.
        assert.deepEqual(blockMask(new HostRng(hostKey(seed)), gh, gw, high), mask);
      },
    ),
    { numRuns: RUNS * 8 },
  );
});

/** A stream that replays scripted uniforms (to exercise a specific draw of the official algorithm). */
class ScriptedRng extends HostRng {
  constructor(private readonly us: number[]) {
    super([0, 0]);
  }
  override uniform(): number {
    const u = this.us.shift();
    if (u === undefined) throw new Error("script exhausted");
    return u;
  }
}

Deno.test("block masks: the minimum area bounds the drawn target, not the rounded rectangle (official behaviour)", () => {
  // 14×14, high 20: low = 16. Block 1: target U(16, 20) at u=0 is 16, aspect at u=0 is 0.3: h = round(√4.8) = 2,
  // w = round(√53.3) = 7; the 2×7 = 14-cell block (< 16) is accepted, as in the official code. Then 6 cells
  // remain, below `low`, so targets are drawn in [6, 16] (u→1 gives 6); aspect 1 (u=0.5) gives a 2×2 block; then
  // 2 and 1 remain, giving 1×1 blocks.
  const U = 0.9999999;
  const script = [0, 0, 0, 0, U, 0.5, 0.5, 0.5, U, 0.5, 0.9, 0.9, U, 0.5, 0.1, 0.95];
  const blocks: BlockRecord[] = [];
  const m = blockMask(new ScriptedRng(script), 14, 14, 20, { onBlock: (b) => blocks.push(b) });
  assert.deepEqual(blocks.map((b) => [b.h, b.w, b.added]), [[2, 7, 14], [2, 2, 4], [1, 1, 1], [1, 1, 1]]);
  assert.equal(count(m), 20);
});

Deno.test("block masks: statistics of spec §5.3 (2000 draws each)", () => {
  const table: [number, number, number, number, number][] = [
    // grid, ratio, mean, min, max
    [14, 0.1, 17.5, 12, 19],
    [14, 0.3, 57.3, 48, 58],
    [14, 0.5, 97.5, 90, 98],
    [8, 0.3, 18.9, 17, 19],
    [7, 0.3, 13.9, 12, 14],
    [4, 0.1, 1.0, 0, 1],
  ];
  for (const [g, r, mean, lo, hi] of table) {
    const counts = Array.from(
      { length: 2000 },
      (_, i) => count(blockMask(new HostRng(hostFoldIn(hostKey(2024), i)), g, g, r * g * g)),
    );
    const m = counts.reduce((a, b) => a + b, 0) / counts.length;
    assert.ok(Math.abs(m - mean) < 0.35, `${g}×${g} ratio ${r}: mean ${m} vs ${mean}`);
    assert.equal(Math.max(...counts), hi, `${g}×${g} ratio ${r}: max`);
    assert.ok(Math.min(...counts) >= lo - 2, `${g}×${g} ratio ${r}: min ${Math.min(...counts)} vs ${lo}`);
  }
});

Deno.test("prediction ratio: 0 w.p. ½ else U(0.1, 0.5) by default; scalar form; pred_start_epoch; validation", () => {
  const rng = new HostRng(hostKey(9));
  const rs = Array.from({ length: 4000 }, () => samplePredRatio(rng));
  const zeros = rs.filter((r) => r === 0).length / rs.length;
  const pos = rs.filter((r) => r !== 0);
  assert.ok(Math.abs(zeros - 0.5) < 0.03, `P(0) = ${zeros}`);
  assert.ok(pos.every((r) => r >= 0.1 && r < 0.5));
  assert.ok(Math.abs(pos.reduce((a, b) => a + b, 0) / pos.length - 0.3) < 0.01);
  assert.equal(samplePredRatio(rng, { predRatio: 0.3 }), 0.3);
  const s = samplePredRatio(rng, { predRatio: 0.3, predRatioVar: 0.1 });
  assert.ok(s >= 0.2 && s < 0.4);
  assert.equal(samplePredRatio(rng, { predStartEpoch: 50, epoch: 49 }), 0);
  assert.throws(() => samplePredRatio(rng, { predRatio: 0.1, predRatioVar: 0.2 }), /predRatio ≥ predRatioVar/);
  // Before pred_start_epoch every mask is empty.
  const early = sampleMasksHost(hostKey(1), 16, 8, 8, { predRatio: 0.5, predStartEpoch: 2, epoch: 1 });
  assert.equal(count(early), 0);
});

Deno.test("rand masks: exactly floor(ratio·N) cells, uniformly placed", () => {
  const hits = new Float64Array(36);
  for (let i = 0; i < 600; i++) {
    const m = randMask(new HostRng(hostFoldIn(hostKey(4), i)), 6, 6, 0.37 * 36);
    assert.equal(count(m), Math.floor(0.37 * 36));
    m.forEach((v, j) => (hits[j] += v));
  }
  for (const h of hits) assert.ok(Math.abs(h / 600 - 13 / 36) < 0.1, `cell frequency ${h / 600}`);
  const m = sampleMask(new HostRng(hostKey(5)), 4, 4, { shape: "rand", predRatio: 0.5 });
  assert.equal(count(m), 8);
});

Deno.test("sampleMasks: bool [B, Gh, Gw], deterministic per key, different across keys, crops and images; CPU = WebGPU", async () => {
  const opts = { predRatio: 0.4, predRatioVar: 0.1 };
  const a = sampleMasksHost(hostKey(1), 32, 14, 14, opts);
  assert.deepEqual(sampleMasksHost(hostKey(1), 32, 14, 14, opts), a);
  assert.notDeepEqual(sampleMasksHost(hostKey(2), 32, 14, 14, opts), a);
  const per = (m: Uint8Array) => Array.from({ length: 32 }, (_, b) => m.slice(b * 196, (b + 1) * 196).join(""));
  assert.ok(new Set(per(a)).size > 30, "images differ");
  const g = await gpu();
  for (const backend of [cpu, g]) {
    const t = sampleMasks(hostKey(1), 32, 14, 14, opts, backend);
    assert.equal(t.dtype, "bool");
    assert.deepEqual(t.shape, [32, 14, 14]);
    assert.deepEqual(Array.from(await t.data()), Array.from(a));
  }
  const crops = sampleCropMasks(hostKey(1), 4, [[4, 4], [4, 4]], { predRatio: 0.5 }, cpu);
  const [c0, c1] = await readAll(crops);
  assert.notDeepEqual(Array.from(c0), Array.from(c1));
});

Deno.test("maskSelection lists exactly the masked cells as token rows with 1/count weights; capacities bound real batches", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 0, max: 2 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      (batch, crops, n, lead, seed) => {
        const rng = new HostRng(hostKey(seed));
        const masks = Array.from(
          { length: crops },
          () => Uint8Array.from({ length: batch * n }, () => +(rng.uniform() < 0.4)),
        );
        const total = masks.reduce((a, m) => a + count(m), 0);
        const sel = maskSelection(masks, batch, total + 3, lead);
        assert.equal(sel.count, total);
        const seen = new Set<number>();
        for (let i = 0; i < sel.count; i++) {
          const row = sel.index[i];
          const image = Math.floor(row / (lead + n));
          const p = row % (lead + n) - lead;
          const c = Math.floor(image / batch);
          const b = image % batch;
          assert.ok(p >= 0 && masks[c][b * n + p] === 1, `row ${row} is a masked patch`);
          const masked = count(masks[c].subarray(b * n, (b + 1) * n));
          assert.ok(Math.abs(sel.weight[i] - 1 / masked) < 1e-7);
          seen.add(row);
        }
        assert.equal(seen.size, total, "no row twice");
        for (let i = sel.count; i < sel.index.length; i++) assert.ok(sel.index[i] === 0 && sel.weight[i] === 0);
        if (total > 0) assert.throws(() => maskSelection(masks, batch, total - 1, lead), /more than .* masked patches/);
      },
    ),
    { numRuns: RUNS },
  );
  // The default recipe on 7x7 grids: `max` is a hard bound, `typical` covers every sampled batch.
  const cap = maskCapacity(2 * 64, 49);
  assert.deepEqual(cap.max, 2 * 64 * 24);
  let highest = 0;
  for (let s = 0; s < 20; s++) {
    const masks = sampleCropMasksHost(s, 64);
    highest = Math.max(highest, masks.reduce((a, m) => a + count(m), 0));
  }
  assert.ok(highest <= cap.typical && cap.typical < cap.max, `highest ${highest}, capacities ${JSON.stringify(cap)}`);
  assert.equal(maskCapacity(10, 49, { predRatio: 0.5, predRatioVar: 0 }).max, 10 * 24);
});

function sampleCropMasksHost(seed: number, batch: number): Uint8Array[] {
  return [0, 1].map((c) => sampleMasksHost(hostFoldIn(hostKey(seed), c), batch, 7, 7));
}
