/**
 * The iBOT loss (train/loss.ts): against the PyTorch fixture (head outputs → loss, cls, patch, new centers) on
 * CPU and WebGPU, against an independent float64 double-loop reference (random view counts, shapes, masks),
 * its gradient w.r.t. the student head outputs against finite differences in float64, stop-gradients, DINO mode,
 * and jit (equal to eager, one trace for all temperatures and momenta).
 */
import assert from "node:assert/strict";
import fc from "npm:fast-check@4.10.2";
import { type Backend, cpu, fromTyped, jit, loadSafetensors, type Tensor, tensor, vjp } from "../mod.ts";
import { ibotLoss, type IbotLossInput } from "../train/loss.ts";
import { maskSelection } from "../train/masking.ts";
import * as api from "../ops/api.ts";
import { assertClose, checkVjp, gpu, randArray, readAll, rng, RUNS } from "./util.ts";

const FIX = new URL("./fixtures/rgb/", import.meta.url).pathname;

/** Fixture inputs of the loss (head outputs, masks, initial centers) on `backend`, plus the expectations. */
async function fixture(backend: Backend) {
  const e = (await loadSafetensors(FIX + "expected.safetensors", { backend })).flat;
  const i = (await loadSafetensors(FIX + "inputs.safetensors", { backend })).flat;
  const get = (m: Map<string, Tensor>, k: string) => {
    const t = m.get(k);
    if (!t) throw new Error(`fixture: missing ${k}`);
    return t;
  };
  const input = {
    studentCls: [0, 1, 2, 3].map((k) => get(e, `student_head_cls.${k}`)),
    studentPatch: [0, 1].map((k) => get(e, `student_head_patch.${k}`)),
    teacherCls: [0, 1].map((k) => get(e, `teacher_head_cls.${k}`)),
    teacherPatch: [0, 1].map((k) => get(e, `teacher_head_patch.${k}`)),
    masks: [0, 1].map((k) => get(i, `masks.${k}`)),
    center: get(i, "center_init"),
    center2: get(i, "center2_init"),
    studentTemp: 0.1,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.07,
  };
  const expected = ["loss_total", "loss_cls", "loss_patch", "center_new", "center2_new"].map((k) => get(e, k));
  return { input, expected };
}

Deno.test("ibotLoss: the PyTorch fixture (total 6.072866 = cls 3.675290 + patch 2.397575, new centers), CPU and WebGPU", async () => {
  for (const backend of [cpu, await gpu()]) {
    const { input, expected } = await fixture(backend);
    const out = ibotLoss(input);
    assert.deepEqual(out.loss.shape, []);
    assert.deepEqual(out.center.shape, [1, 128]);
    assert.deepEqual(out.center2.shape, [1, 1, 128]);
    const got = await readAll([out.loss, out.cls, out.patch, out.center, out.center2]);
    const want = await readAll(expected);
    const names = ["loss", "cls", "patch", "center", "center2"];
    got.forEach((g, k) => assertClose(g, want[k], 1e-4, 1e-6, `${backend.name} ${names[k]}`));
    assertClose(got[0], [6.072866], 1e-6, 0, "total (README)");
  }
});

Deno.test("ibotLoss: maskedPatches (logits at the masked rows only, padded) gives the fixture's loss, patch and center2", async () => {
  for (const backend of [cpu, await gpu()]) {
    const { input, expected } = await fixture(backend);
    const [B, N, K] = input.teacherPatch[0].shape;
    const rows = (ts: Tensor[]) => api.reshape(api.concat(ts, 0), [2 * B * N, K]);
    const host = (await readAll(input.masks)).map((m) => Uint8Array.from(m));
    const sel = maskSelection(host, B, 2 * B * N + 5);
    const index = fromTyped(sel.index, [sel.index.length], "int32", backend);
    const { studentPatch, teacherPatch, masks: _masks, ...rest } = input;
    const out = ibotLoss({
      ...rest,
      maskedPatches: {
        student: api.gather(rows(studentPatch), index, 0),
        teacher: api.gather(rows(teacherPatch), index, 0),
        weight: fromTyped(sel.weight, [sel.weight.length], "float32", backend),
        images: 2 * B,
        teacherMean: api.mean(rows(teacherPatch), 0, true),
      },
    });
    const got = await readAll([out.loss, out.cls, out.patch, out.center, out.center2]);
    const want = await readAll(expected);
    ["loss", "cls", "patch", "center", "center2"].forEach((name, k) =>
      assertClose(got[k], want[k], 1e-4, 1e-6, `${backend.name} ${name}`)
    );
    assert.throws(
      () =>
        ibotLoss({
          ...rest,
          maskedPatches: {
            student: index,
            teacher: index,
            weight: index,
            images: 1,
            teacherMean: index,
          },
        }),
      /maskedPatches needs student and teacher \[C, K\]/,
    );
  }
});

Deno.test("ibotLoss: jit equals eager, and one plan serves every temperature / momentum / lambda (WebGPU and CPU)", async () => {
  for (const backend of [await gpu(), cpu]) {
    const { input } = await fixture(backend);
    const f = jit((x: IbotLossInput) => ibotLoss(x));
    const settings = [
      { teacherTemp: 0.04, teacherPatchTemp: 0.07, centerMomentum: 0.9, centerMomentum2: 0.9, lambda1: 1, lambda2: 1 },
      {
        teacherTemp: 0.06,
        teacherPatchTemp: 0.05,
        centerMomentum: 0.8,
        centerMomentum2: 0.95,
        lambda1: 0.5,
        lambda2: 2,
      },
    ];
    for (const s of settings) {
      const x = { ...input, ...s };
      const a = f(x);
      const b = ibotLoss(x);
      const [ja, eb] = await Promise.all([
        readAll([a.loss, a.cls, a.patch, a.center, a.center2]),
        readAll([b.loss, b.cls, b.patch, b.center, b.center2]),
      ]);
      ja.forEach((v, k) => assertClose(v, eb[k], 1e-5, 1e-6, `${backend.name} jit vs eager output ${k}`));
    }
    assert.equal(f.stats().traces, 1, "changing hyperparameters must not retrace");
    // Scalar-tensor temperatures work too (what a caller gets from a schedule already on the device).
    const t = ibotLoss({ ...input, teacherTemp: tensor(0.04, { backend }), studentTemp: tensor(0.1, { backend }) });
    assertClose(await t.loss.data(), [6.072866], 1e-4, 0, "tensor temperatures");
    f.dispose();
  }
});

// ---------------------------------------------------------------------------------------------------------
// An independent float64 reference: the official double loop, written out with plain arrays.

interface RefCase {
  ng: number;
  nl: number;
  B: number;
  K: number;
  N: number;
  sc: Float64Array[];
  sp: Float64Array[];
  tc: Float64Array[];
  tp: Float64Array[];
  masks: Uint8Array[];
  center: Float64Array;
  center2: Float64Array;
  tS: number;
  tT: number;
  tTP: number;
  m1: number;
  m2: number;
  l1: number;
  l2: number;
}

function softmaxRow(x: Float64Array, off: number, K: number, sub: Float64Array, temp: number): number[] {
  const z = Array.from({ length: K }, (_, k) => (x[off + k] - sub[k]) / temp);
  const mx = Math.max(...z);
  const e = z.map((v) => Math.exp(v - mx));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function logSoftmaxRow(x: Float64Array, off: number, K: number, temp: number): number[] {
  const z = Array.from({ length: K }, (_, k) => x[off + k] / temp);
  const mx = Math.max(...z);
  const lse = mx + Math.log(z.reduce((a, v) => a + Math.exp(v - mx), 0));
  return z.map((v) => v - lse);
}

function reference(c: RefCase) {
  const { ng, nl, B, K, N } = c;
  let total1 = 0, n1 = 0, total2 = 0, n2 = 0;
  for (let q = 0; q < ng; q++) {
    for (let v = 0; v < ng + nl; v++) {
      let term = 0;
      if (v === q) {
        for (let b = 0; b < B; b++) {
          let s = 0, cnt = 0;
          for (let n = 0; n < N; n++) {
            const off = (b * N + n) * K;
            const t = softmaxRow(c.tp[q], off, K, c.center2, c.tTP);
            const l = logSoftmaxRow(c.sp[v], off, K, c.tS);
            const ce = -t.reduce((a, tk, k) => a + tk * l[k], 0);
            s += ce * c.masks[q][b * N + n];
            cnt += c.masks[q][b * N + n];
          }
          term += s / Math.max(cnt, 1);
        }
        total2 += term / B;
        n2++;
      } else {
        for (let b = 0; b < B; b++) {
          const t = softmaxRow(c.tc[q], b * K, K, c.center, c.tT);
          const l = logSoftmaxRow(c.sc[v], b * K, K, c.tS);
          term += -t.reduce((a, tk, k) => a + tk * l[k], 0);
        }
        total1 += term / B;
        n1++;
      }
    }
  }
  const cls = (total1 / n1) * c.l1;
  const patch = (total2 / n2) * c.l2;
  const center = c.center.map((x, k) => {
    let s = 0;
    for (let q = 0; q < ng; q++) for (let b = 0; b < B; b++) s += c.tc[q][b * K + k];
    return x * c.m1 + (s / (ng * B)) * (1 - c.m1);
  });
  const center2 = c.center2.map((x, k) => {
    let s = 0;
    for (let q = 0; q < ng; q++) {
      for (let b = 0; b < B; b++) {
        let sn = 0;
        for (let n = 0; n < N; n++) sn += c.tp[q][(b * N + n) * K + k];
        s += sn / N;
      }
    }
    return x * c.m2 + (s / (ng * B)) * (1 - c.m2);
  });
  return { loss: cls + patch, cls, patch, center, center2, nCls: n1, nPatch: n2 };
}

function makeCase(seed: number, ng: number, nl: number, B: number, K: number, N: number): RefCase {
  const r = rng(seed);
  let s = seed * 1000;
  const arr = (n: number, scale = 3) => randArray(++s, n, -scale, scale);
  const masks = Array.from(
    { length: ng },
    () => Uint8Array.from({ length: B * N }, (_, i) => (i < N ? 0 : r() < 0.5 ? 1 : 0)), // image 0: nothing masked
  );
  return {
    ng,
    nl,
    B,
    K,
    N,
    sc: Array.from({ length: ng + nl }, () => arr(B * K)),
    sp: Array.from({ length: ng }, () => arr(B * N * K)),
    tc: Array.from({ length: ng }, () => arr(B * K, 1)),
    tp: Array.from({ length: ng }, () => arr(B * N * K, 1)),
    masks,
    center: arr(K, 0.3),
    center2: arr(K, 0.3),
    tS: 0.1 + 0.2 * r(),
    tT: 0.04 + 0.05 * r(),
    tTP: 0.04 + 0.05 * r(),
    m1: 0.5 + 0.5 * r(),
    m2: 0.5 + 0.5 * r(),
    l1: 0.5 + r(),
    l2: 0.5 + r(),
  };
}

function toInput(c: RefCase, dtype: "float64" | "float32" = "float64", backend: Backend = cpu): IbotLossInput {
  const t = (d: Float64Array, shape: number[]) =>
    fromTyped(dtype === "float32" ? Float32Array.from(d) : d, shape, dtype, backend);
  return {
    studentCls: c.sc.map((d) => t(d, [c.B, c.K])),
    studentPatch: c.sp.map((d) => t(d, [c.B, c.N, c.K])),
    teacherCls: c.tc.map((d) => t(d, [c.B, c.K])),
    teacherPatch: c.tp.map((d) => t(d, [c.B, c.N, c.K])),
    masks: c.masks.map((m) => fromTyped(m, [c.B, c.N], "bool", backend)),
    center: t(c.center, [1, c.K]),
    center2: t(c.center2, [1, 1, c.K]),
    studentTemp: c.tS,
    teacherTemp: c.tT,
    teacherPatchTemp: c.tTP,
    centerMomentum: c.m1,
    centerMomentum2: c.m2,
    lambda1: c.l1,
    lambda2: c.l2,
  };
}

Deno.test("ibotLoss: equals the official double loop in float64 (random views, shapes, masks; ng·(nc−1) CLS and ng MIM terms)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        seed: fc.integer({ min: 1, max: 1e6 }),
        ng: fc.integer({ min: 1, max: 3 }),
        nl: fc.integer({ min: 0, max: 3 }),
        B: fc.integer({ min: 1, max: 3 }),
        K: fc.integer({ min: 2, max: 6 }),
        N: fc.integer({ min: 1, max: 5 }),
      }).filter((c) => c.ng + c.nl >= 2),
      async ({ seed, ng, nl, B, K, N }) => {
        const c = makeCase(seed, ng, nl, B, K, N);
        const want = reference(c);
        assert.equal(want.nCls, ng * (ng + nl - 1));
        assert.equal(want.nPatch, ng);
        const out = ibotLoss(toInput(c));
        const got = await readAll([out.loss, out.cls, out.patch, out.center, out.center2]);
        assertClose(got[0], [want.loss], 1e-12, 1e-12, "loss");
        assertClose(got[1], [want.cls], 1e-12, 1e-12, "cls");
        assertClose(got[2], [want.patch], 1e-12, 1e-12, "patch");
        assertClose(got[3], want.center, 1e-12, 1e-12, "center");
        assertClose(got[4], want.center2, 1e-12, 1e-12, "center2");
      },
    ),
    { numRuns: RUNS },
  );
  // The spec's count: 2 globals + 3 locals give 8 CLS terms and 2 MIM terms.
  const r = reference(makeCase(7, 2, 3, 1, 2, 1));
  assert.deepEqual([r.nCls, r.nPatch], [8, 2]);
});

Deno.test("ibotLoss: gradient w.r.t. the student head outputs (fixture values) matches finite differences in float64", async () => {
  const { input } = await fixture(cpu);
  const f64 = async (t: Tensor) => fromTyped(Float64Array.from(await t.data()), t.shape, "float64", cpu);
  const sc = await Promise.all(input.studentCls.map(f64));
  const sp = await Promise.all(input.studentPatch.map(f64));
  const fixed = {
    ...input,
    teacherCls: await Promise.all(input.teacherCls.map(f64)),
    teacherPatch: await Promise.all(input.teacherPatch.map(f64)),
    center: await f64(input.center),
    center2: await f64(input.center2),
  };
  const f = (...xs: Tensor[]) => {
    const o = ibotLoss({ ...fixed, studentCls: xs.slice(0, 4), studentPatch: xs.slice(4) });
    return [o.loss, o.cls, o.patch];
  };
  for (const seed of [1, 2]) {
    await checkVjp(f, [...sc, ...sp], { seed, eps: 1e-4, rtol: 1e-7, what: `ibotLoss vjp (seed ${seed})` });
  }
  // The loss also matches the float32 fixture when computed in float64 from the same inputs.
  const o = ibotLoss({ ...fixed, studentCls: sc, studentPatch: sp });
  assertClose(await o.loss.data(), [6.072866], 1e-6, 0, "float64 total");
});

Deno.test("ibotLoss: teacher outputs and centers get no gradient; unmasked patches and images get none either", async () => {
  const c = makeCase(11, 2, 1, 2, 4, 3);
  const x = toInput(c);
  const [, pull] = vjp(
    (sp: Tensor[], tc: Tensor[], tp: Tensor[], center: Tensor, center2: Tensor) =>
      ibotLoss({ ...x, studentPatch: sp, teacherCls: tc, teacherPatch: tp, center, center2 }).loss,
    x.studentPatch,
    x.teacherCls,
    x.teacherPatch,
    x.center,
    x.center2,
  );
  const [dsp, dtc, dtp, dc, dc2] = pull(tensor(1, { dtype: "float64", backend: cpu })) as [
    Tensor[],
    Tensor[],
    Tensor[],
    Tensor,
    Tensor,
  ];
  for (const g of [...dtc, ...dtp, dc, dc2]) {
    assert.ok((await g.data()).every((v) => v === 0), "teacher side must be 0");
  }
  // Student patch gradient: non-zero exactly at masked patches.
  for (let q = 0; q < 2; q++) {
    const g = await dsp[q].data();
    for (let bn = 0; bn < c.B * c.N; bn++) {
      const row = Array.from(g.subarray(bn * c.K, (bn + 1) * c.K));
      assert.equal(row.some((v) => v !== 0), c.masks[q][bn] === 1, `view ${q} patch ${bn}`);
    }
  }
});

Deno.test("ibotLoss: DINO mode (no masks, all-false masks, no patch outputs) gives patch exactly 0", async () => {
  const c = makeCase(5, 2, 2, 2, 5, 4);
  const x = toInput(c);
  const full = reference({ ...c, masks: c.masks.map((m) => m.map(() => 0)) });
  const none = ibotLoss({ ...x, masks: undefined });
  const zeroMasks = ibotLoss({
    ...x,
    masks: x.masks!.map((m) => fromTyped(new Uint8Array(m.size), m.shape, "bool", cpu)),
  });
  const noPatch = ibotLoss({ ...x, studentPatch: [], teacherPatch: [] });
  for (const [name, o] of [["no masks", none], ["zero masks", zeroMasks], ["no patch", noPatch]] as const) {
    const [loss, cls, patch] = await readAll([o.loss, o.cls, o.patch]);
    assert.equal(patch[0], 0, `${name}: patch`);
    assertClose(cls, [full.cls], 1e-12, 1e-12, `${name}: cls`);
    assertClose(loss, [full.cls], 1e-12, 1e-12, `${name}: loss`);
  }
  // The patch center is still updated from the teacher patches unless there are none.
  assertClose(await zeroMasks.center2.data(), full.center2, 1e-12, 1e-12, "center2 with zero masks");
  assertClose(await noPatch.center2.data(), c.center2, 0, 0, "center2 without patches");
  // Masks may also be [B, Gh, Gw].
  const grid = ibotLoss({ ...x, masks: x.masks!.map((m) => m.reshape([c.B, 2, 2])) });
  assertClose(await grid.loss.data(), [reference(c).loss], 1e-12, 1e-12, "grid masks");
});

Deno.test("ibotLoss: clear errors for inconsistent inputs", () => {
  const x = toInput(makeCase(3, 2, 0, 2, 4, 4));
  assert.throws(() => ibotLoss({ ...x, studentCls: x.studentCls.slice(0, 1) }), /student views/);
  assert.throws(() => ibotLoss({ ...x, studentPatch: x.studentPatch!.slice(0, 1) }), /patch tensor per global view/);
  assert.throws(() => ibotLoss({ ...x, center: x.center2 }), /center is \[1,1,4\]/);
  assert.throws(() => ibotLoss({ ...x, masks: [x.masks![0].reshape([8])] }), /masks/);
});
