/**
 * Schedules (train/schedules.ts) against the spec's reference values (§7.2, §4.1, §12) and against a
 * NumPy-style reimplementation (linspace + cosine arrays, concatenated) for random settings.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4.10.2";
import { cosineAt, cosineScheduler, hyperparamsAt, scaledLr, teacherTempAt } from "../train/schedules.ts";
import { assertClose, RUNS } from "./util.ts";

/** NumPy's linspace(a, b, n) (endpoint included). */
function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + (b - a) * i / (n - 1));
}

/** The official cosine_scheduler, as arrays. */
function numpyCosine(base: number, final: number, epochs: number, niter: number, warmupEpochs = 0, start = 0) {
  const w = warmupEpochs * niter;
  const warm = warmupEpochs > 0 ? linspace(start, base, w) : [];
  const J = epochs * niter - w;
  const rest = Array.from({ length: J }, (_, j) => final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * j / J)));
  return [...warm, ...rest];
}

Deno.test("cosine schedule: the spec's example (base 1, final 0, 3 epochs × 4 iters, 1 warm-up epoch)", () => {
  const want = [0, 0.3333, 0.6667, 1, 1, 0.9619, 0.8536, 0.6913, 0.5, 0.3087, 0.1464, 0.0381];
  const got = cosineScheduler({ base: 1, final: 0, epochs: 3, itersPerEpoch: 4, warmupEpochs: 1 });
  assert.equal(got.length, 12);
  assertClose(got, want, 0, 5e-5, "lr example");
  assert.equal(cosineAt(100, { base: 1, final: 0, epochs: 3, itersPerEpoch: 4, warmupEpochs: 1 }), got[11]);
});

Deno.test("teacher momentum: 0.996 → 1 over 2 epochs × 3 iterations (spec §12)", () => {
  const got = cosineScheduler({ base: 0.996, final: 1, epochs: 2, itersPerEpoch: 3 });
  assertClose(got, [0.996, 0.996268, 0.997, 0.998, 0.999, 0.999732], 0, 5e-7, "momentum");
  assert.ok(got.every((m) => m < 1), "never exactly 1");
});

Deno.test("weight decay: cosine 0.04 → 0.4 without warm-up, increasing", () => {
  const got = cosineScheduler({ base: 0.04, final: 0.4, epochs: 10, itersPerEpoch: 5 });
  assertClose([got[0]], [0.04], 1e-15, 0, "wd start");
  for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1]);
  assert.ok(got[got.length - 1] < 0.4);
});

Deno.test("teacher temperatures: per-epoch ramp 0.04 → 0.07 over 30 epochs; patch ramp delayed by pred_start_epoch", () => {
  const s = { warmup: 0.04, final: 0.07, warmupEpochs: 30 };
  assertClose(
    [teacherTempAt(0, s), teacherTempAt(1, s), teacherTempAt(29, s), teacherTempAt(30, s), teacherTempAt(500, s)],
    [
      0.04,
      0.041034,
      0.07,
      0.07,
      0.07,
    ],
    0,
    5e-7,
    "cls temp",
  );
  const p = { ...s, startEpoch: 50 };
  assert.equal(teacherTempAt(0, p), 0.04);
  assert.equal(teacherTempAt(50, p), 0.04);
  assert.ok(teacherTempAt(51, p) > 0.04);
  assertClose([teacherTempAt(79, p), teacherTempAt(80, p)], [0.07, 0.07], 1e-15, 0, "patch temp after the ramp");
  assert.equal(teacherTempAt(3, { final: 0.07, warmupEpochs: 0 }), 0.07);
});

Deno.test("schedules equal the official NumPy arrays for random settings", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 0, max: 12 }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.double({ min: 0, max: 1, noNaN: true }),
      (epochs, niter, warmup, base, final) => {
        const w = Math.min(warmup, epochs);
        const want = numpyCosine(base, final, epochs, niter, w, 0.01);
        const got = cosineScheduler({ base, final, epochs, itersPerEpoch: niter, warmupEpochs: w, startWarmup: 0.01 });
        assertClose(got, want, 1e-15, 1e-15, "cosine");
        // Teacher temperature arrays (iBOTLoss.__init__), with and without a MIM start epoch.
        const W = Math.min(warmup, epochs);
        const cls = [...linspace(0.04, 0.07, W), ...Array(epochs - W).fill(0.07)];
        cls.forEach((v, e) => assertClose([teacherTempAt(e, { final: 0.07, warmupEpochs: W })], [v], 1e-15, 0, "temp"));
        const S = Math.floor(epochs / 3);
        if (W + S <= epochs && S > 0) {
          const patch = [...Array(S).fill(0.04), ...linspace(0.04, 0.07, W), ...Array(epochs - W - S).fill(0.07)];
          patch.forEach((v, e) =>
            assertClose([teacherTempAt(e, { final: 0.07, warmupEpochs: W, startEpoch: S })], [v], 1e-15, 0, "patch")
          );
        }
      },
    ),
    { numRuns: RUNS * 4 },
  );
});

Deno.test("hyperparamsAt: the recipe's per-iteration values (lr scaling and warm-up, wd, momentum, temps, freeze)", () => {
  const c = {
    epochs: 4,
    itersPerEpoch: 5,
    lr: 5e-4,
    batchSize: 512,
    warmupEpochs: 1,
    teacherTemp: 0.07,
    warmupTeacherTempEpochs: 2,
  };
  assert.equal(scaledLr(5e-4, 512), 1e-3);
  const hs = Array.from({ length: 20 }, (_, it) => hyperparamsAt(it, c));
  assertClose(hs.map((h) => h.lr), numpyCosine(1e-3, 1e-6, 4, 5, 1), 1e-15, 0, "lr");
  assertClose(hs.map((h) => h.wd), numpyCosine(0.04, 0.4, 4, 5), 1e-15, 0, "wd");
  assertClose(hs.map((h) => h.momentum), numpyCosine(0.996, 1, 4, 5), 1e-15, 0, "momentum");
  assert.deepEqual(hs.map((h) => h.epoch), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
  assert.deepEqual(hs.map((h) => h.freezeLastLayer), [1, 1, 1, 1, 1, ...Array(15).fill(0)]);
  assert.deepEqual([hs[0].teacherTemp, hs[5].teacherTemp, hs[10].teacherTemp], [0.04, 0.07, 0.07]);
  assert.deepEqual([hs[0].teacherPatchTemp, hs[5].teacherPatchTemp], [0.04, 0.07]);
  assert.equal(hs[0].lr, 0);
  assert.throws(() => hyperparamsAt(-1, c), /iteration/);
});
