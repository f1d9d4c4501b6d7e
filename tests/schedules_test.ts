/**
 * Schedules (train/schedules.ts) against the spec's reference values (§7.2, §4.1, §12) and against a
 * NumPy-style reimplementation (linspace + cosine arrays, concatenated) for random settings.
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4.10.2";
import { cosineAt, cosineScheduler, hyperparamsAt, scaledLr, teacherTempAt } from "../train/schedules.ts";
import { assertClose, RUNS } from "./util.ts";
import { assertAllFields, linspace, officialArrays } from "./schedule_reference.ts";

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

Deno.test("hyperparamsAt: every field equals the official arrays for random recipes", () => {
  fc.assert(
    fc.property(
      fc.record({
        epochs: fc.integer({ min: 1, max: 10 }),
        niter: fc.integer({ min: 1, max: 7 }),
        warmup: fc.integer({ min: 0, max: 10 }),
        tempEpochs: fc.integer({ min: 0, max: 10 }),
        predStart: fc.integer({ min: 0, max: 10 }),
        freeze: fc.integer({ min: 0, max: 3 }),
        lr: fc.double({ min: 1e-5, max: 1e-2, noNaN: true }),
        batch: fc.integer({ min: 1, max: 2048 }),
        minLr: fc.double({ min: 0, max: 1e-5, noNaN: true }),
        wd: fc.tuple(fc.double({ min: 0, max: 0.1, noNaN: true }), fc.double({ min: 0.1, max: 0.5, noNaN: true })),
        m0: fc.double({ min: 0.9, max: 0.9999, noNaN: true }),
        temp: fc.tuple(
          fc.double({ min: 0.02, max: 0.05, noNaN: true }),
          fc.double({ min: 0.05, max: 0.1, noNaN: true }),
        ),
      }),
      (r) => {
        const warmup = Math.min(r.warmup, r.epochs);
        const W = Math.min(r.tempEpochs, r.epochs);
        const S = Math.min(r.predStart, r.epochs - W);
        const c = {
          epochs: r.epochs,
          itersPerEpoch: r.niter,
          lr: r.lr,
          batchSize: r.batch,
          warmupEpochs: warmup,
          minLr: r.minLr,
          weightDecay: r.wd[0],
          weightDecayEnd: r.wd[1],
          momentumTeacher: r.m0,
          warmupTeacherTemp: r.temp[0],
          teacherTemp: r.temp[1],
          warmupTeacherPatchTemp: r.temp[0],
          teacherPatchTemp: r.temp[1],
          warmupTeacherTempEpochs: W,
          predStartEpoch: S,
          freezeLastLayer: r.freeze,
        };
        const got = Array.from({ length: r.epochs * r.niter }, (_, it) => hyperparamsAt(it, c));
        const want = officialArrays({
          epochs: r.epochs,
          niter: r.niter,
          peakLr: r.lr * r.batch / 256,
          minLr: r.minLr,
          warmIters: warmup * r.niter,
          wd: r.wd,
          momentum: [r.m0, 1],
          temp: r.temp,
          tempEpochs: W,
          predStart: S,
          freeze: r.freeze,
        });
        assertAllFields(got, want);
      },
    ),
    { numRuns: RUNS * 4 },
  );
});

Deno.test("hyperparamsAt: the per-iteration teacher temperature ramp (not official) and fractional warm-up", () => {
  const c = {
    epochs: 3,
    itersPerEpoch: 7,
    warmupEpochs: 0.5,
    warmupTeacherTemp: 0.04,
    teacherTemp: 0.07,
    teacherPatchTemp: 0.1,
    teacherTempRampFraction: 0.3,
    predStartEpoch: 1,
  };
  const hs = Array.from({ length: 21 }, (_, it) => hyperparamsAt(it, c));
  // Ramp over round(0.3 · 21) = 6 iterations: start + (end − start)·j/6, the patch one from iteration 7.
  const ramp = (end: number, delay: number) =>
    Array.from({ length: 21 }, (_, it) => {
      const j = it - delay;
      return j < 0 ? 0.04 : j < 6 ? 0.04 + (end - 0.04) * j / 6 : end;
    });
  assertClose(hs.map((h) => h.teacherTemp), ramp(0.07, 0), 1e-15, 0, "cls ramp");
  assertClose(hs.map((h) => h.teacherPatchTemp), ramp(0.1, 7), 1e-15, 0, "patch ramp");
  // 0.5 · 7 = 3.5 warm-up epochs' iterations round to 4: linspace(0, peak, 4), then the cosine over 17.
  const peak = 5e-4;
  const lr = [
    ...linspace(0, peak, 4),
    ...Array.from({ length: 17 }, (_, j) => 1e-6 + 0.5 * (peak - 1e-6) * (1 + Math.cos(Math.PI * j / 17))),
  ];
  assertClose(hs.map((h) => h.lr), lr, 1e-15, 0, "lr");
  assert.equal(
    hyperparamsAt(0, { epochs: 2, itersPerEpoch: 1, warmupEpochs: 1 }).lr,
    0,
    "a 1-iteration warm-up is [0]",
  );
});
