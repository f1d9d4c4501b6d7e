/**
 * The official iBOT schedules (spec §7.2 `cosine_scheduler`, §4.1 the teacher temperature arrays of
 * `iBOTLoss.__init__`) written from the spec as whole arrays, independently of train/schedules.ts, to test every
 * field the schedules return.
 */
import assert from "node:assert/strict";
import { assertClose } from "./util.ts";
import type { IbotHyper } from "../train/step.ts";

/** NumPy's linspace(a, b, n) (endpoint included). */
export function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + (b - a) * i / (n - 1));
}

/** The official schedules of a recipe (spec §7.2, §4.1) as arrays over its iterations, built independently. */
export function officialArrays(r: {
  epochs: number;
  niter: number;
  peakLr: number;
  minLr: number;
  warmIters: number;
  wd: [number, number];
  momentum: [number, number];
  temp: [number, number];
  tempEpochs: number;
  predStart: number;
  freeze: number;
}) {
  const total = r.epochs * r.niter;
  // cosine_scheduler with its warm-up given in iterations (linspace(0, peak, w), then the cosine over the rest).
  const cosine = (base: number, final: number, w: number) => [
    ...(w > 0 ? linspace(0, base, w) : []),
    ...Array.from(
      { length: total - w },
      (_, j) => final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * j / (total - w))),
    ),
  ];
  const [t0, t1] = r.temp;
  const W = r.tempEpochs;
  const S = r.predStart;
  const clsTemp = [...linspace(t0, t1, W), ...Array(r.epochs - W).fill(t1)];
  const patchTemp = [...Array(S).fill(t0), ...linspace(t0, t1, W), ...Array(r.epochs - W - S).fill(t1)];
  const epoch = Array.from({ length: total }, (_, it) => Math.floor(it / r.niter));
  return {
    epoch,
    lr: cosine(r.peakLr, r.minLr, r.warmIters),
    wd: cosine(r.wd[0], r.wd[1], 0),
    momentum: cosine(r.momentum[0], r.momentum[1], 0),
    teacherTemp: epoch.map((e) => clsTemp[e]),
    teacherPatchTemp: epoch.map((e) => patchTemp[e]),
    freezeLastLayer: epoch.map((e) => (e < r.freeze ? 1 : 0)),
  };
}

/** Asserts that every field of `got` (one entry per iteration) equals the official arrays. */
export function assertAllFields(got: Required<IbotHyper>[], want: ReturnType<typeof officialArrays>, what = "") {
  assert.equal(got.length, want.lr.length);
  const keys = ["epoch", "lr", "wd", "momentum", "teacherTemp", "teacherPatchTemp", "freezeLastLayer"] as const;
  assert.deepEqual(Object.keys(got[0]).sort(), [...keys].sort(), "the fields a step receives");
  for (const k of keys) assertClose(got.map((h) => h[k]), want[k], 1e-14, 1e-17, `${what} ${k}`);
}
