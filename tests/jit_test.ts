/**
 * jit: equal to eager execution on a small transformer (MLP + single- and multi-head self-attention, layerNorm,
 * gelu, residuals) forward and gradients on CPU and WebGPU; caching per signature; graph printing; jit under
 * grad; output ownership and disposal.
 */
import assert from "node:assert/strict";
import {
  type Backend,
  cpu,
  fromTyped,
  grad,
  jit,
  matmul,
  mean,
  mT,
  nn,
  reshape,
  slice,
  type Tensor,
  tensor,
  transpose,
  tree,
  valueAndGrad,
} from "../mod.ts";
import { assertClose, gpu, randArray, readAll } from "./util.ts";

interface Linear {
  weight: Tensor;
  bias: Tensor;
}
interface Block {
  norm1: Linear;
  attn: { qkv: Linear; proj: Linear };
  norm2: Linear;
  mlp: { fc1: Linear; fc2: Linear };
}
interface Params {
  embed: Linear;
  blocks: Block[];
  head: Linear;
}

const [B, T, DIN, D, HID, C] = [2, 5, 6, 8, 16, 3];

function makeParams(backend: Backend, seed: number, depth: number): Params {
  let s = seed;
  const t = (shape: number[], lo = -0.5, hi = 0.5) =>
    fromTyped(Float32Array.from(randArray(s++, shape.reduce((a, b) => a * b, 1), lo, hi)), shape, "float32", backend);
  const lin = (o: number, i: number): Linear => ({ weight: t([o, i]), bias: t([o], -0.1, 0.1) });
  const norm = (): Linear => ({ weight: t([D], 0.8, 1.2), bias: t([D], -0.1, 0.1) });
  return {
    embed: lin(D, DIN),
    blocks: Array.from({ length: depth }, () => ({
      norm1: norm(),
      attn: { qkv: lin(3 * D, D), proj: lin(D, D) },
      norm2: norm(),
      mlp: { fc1: lin(HID, D), fc2: lin(D, HID) },
    })),
    head: lin(C, D),
  };
}

/** Self-attention with `heads` heads: softmax(Q K^T / sqrt(d)) V. */
function attention(p: Block["attn"], x: Tensor, heads: number): Tensor {
  const [b, t, d] = x.shape;
  const hd = d / heads;
  const qkv = transpose(reshape(nn.linear(x, p.qkv.weight, p.qkv.bias), [b, t, 3, heads, hd]), [2, 0, 3, 1, 4]);
  const part = (i: number) => reshape(slice(qkv, [i], [i + 1]), [b, heads, t, hd]);
  const [q, k, v] = [part(0), part(1), part(2)];
  const att = nn.softmax(matmul(q, mT(k)).mul(1 / Math.sqrt(hd)));
  const o = reshape(transpose(matmul(att, v), [0, 2, 1, 3]), [b, t, d]);
  return nn.linear(o, p.proj.weight, p.proj.bias);
}

function forward(p: Params, x: Tensor, heads: number): Tensor {
  let h = nn.linear(x, p.embed.weight, p.embed.bias);
  for (const blk of p.blocks) {
    h = h.add(attention(blk.attn, nn.layerNorm(h, blk.norm1.weight, blk.norm1.bias), heads));
    const m = nn.gelu(
      nn.linear(nn.layerNorm(h, blk.norm2.weight, blk.norm2.bias), blk.mlp.fc1.weight, blk.mlp.fc1.bias),
    );
    h = h.add(nn.linear(m, blk.mlp.fc2.weight, blk.mlp.fc2.bias));
  }
  return nn.linear(mean(h, 1), p.head.weight, p.head.bias);
}

const lossOf = (heads: number) => (p: Params, x: Tensor, target: Tensor) =>
  mean(nn.softCrossEntropy(target, forward(p, x, heads)));

function inputs(backend: Backend) {
  const x = fromTyped(Float32Array.from(randArray(100, B * T * DIN, -1, 1)), [B, T, DIN], "float32", backend);
  const raw = randArray(101, B * C, 0.1, 1);
  for (let r = 0; r < B; r++) {
    const s = raw[r * C] + raw[r * C + 1] + raw[r * C + 2];
    for (let j = 0; j < C; j++) raw[r * C + j] /= s;
  }
  return { x, target: fromTyped(Float32Array.from(raw), [B, C], "float32", backend) };
}

Deno.test("jit equals eager on a transformer: forward and gradients, CPU and WebGPU", async (t) => {
  const g = await gpu();
  // [backend, heads, tolerance of jit vs eager]: fused WebGPU kernels may round differently from op-by-op ones.
  const configs: [Backend, number, number][] = [[cpu, 1, 1e-5], [cpu, 2, 1e-5], [g, 1, 1e-4], [g, 4, 1e-4]];
  const cpuReference = new Map<number, ArrayLike<number>[]>();
  for (const [backend, heads, tol] of configs) {
    await t.step(`${backend.name}, ${heads} head${heads > 1 ? "s" : ""}`, async () => {
      const params = makeParams(backend, 1, 2);
      const { x, target } = inputs(backend);
      const loss = lossOf(heads);
      const fwd = (p: Params, v: Tensor) => forward(p, v, heads);
      const jf = jit(fwd);
      const jvg = jit(valueAndGrad(loss));
      const [eLoss, eGrads] = valueAndGrad(loss)(params, x, target);
      const [jLoss, jGrads] = jvg(params, x, target);
      const eOut = fwd(params, x);
      const jOut = jf(params, x);
      assert.deepEqual(jOut.shape, [B, C]);
      const names = tree.paths(params).map(([p]) => p);
      assert.equal(names.length, 4 + 2 * 12);
      assert.deepEqual(tree.paths(jGrads).map(([p]) => p), names, "jit grads mirror the params tree");
      const eager = [eOut, eLoss, ...tree.leaves<Tensor>(eGrads)];
      const jitted = [jOut, jLoss, ...tree.leaves<Tensor>(jGrads)];
      const [ed, jd] = await Promise.all([readAll(eager), readAll(jitted)]);
      const what = ["forward", "loss", ...names.map((n) => `grad ${n}`)];
      ed.forEach((e, i) => assertClose(jd[i], e, tol, tol / 10, `${backend.name} jit vs eager: ${what[i]}`));
      // Gradients are not trivially zero (every parameter matters).
      for (let i = 2; i < ed.length; i++) assert.ok(Array.from(ed[i]).some((v) => v !== 0), what[i]);
      // A second call with new parameter values reuses the plan and still matches eager.
      const params2 = makeParams(backend, 50, 2);
      const [eLoss2] = valueAndGrad(loss)(params2, x, target);
      const [jLoss2] = jvg(params2, x, target);
      assertClose([await jLoss2.item()], [await eLoss2.item()], tol, tol / 10, "second call");
      assert.equal(jvg.stats().traces, 1);
      if (backend.name === "webgpu") {
        // The compiled plan (not the op-by-op interpreter) is what ran, with elementwise ops fused.
        const st = jvg.stats();
        assert.ok(st.plan, "a compiled WebGPU plan");
        assert.ok(st.plan.dispatches < st.eqns, `${st.plan.dispatches} dispatches for ${st.eqns} equations`);
        // The op-by-op interpreter agrees with the compiled plan.
        const [iLoss, iGrads] = jit(valueAndGrad(loss), { interpret: true })(params, x, target);
        const id = await readAll([iLoss, ...tree.leaves<Tensor>(iGrads)]);
        id.forEach((v, i) => assertClose(v, jd[i + 1], tol, tol / 10, `interpreted vs compiled: ${what[i + 1]}`));
      }
      if (backend === cpu) cpuReference.set(heads, ed);
      else if (cpuReference.has(heads)) {
        // WebGPU against the CPU.
        cpuReference.get(heads)!.forEach((c, i) => assertClose(ed[i], c, 1e-4, 1e-5, `webgpu vs cpu: ${what[i]}`));
      }
    });
  }
});

Deno.test("jit caches per signature", async (t) => {
  const g = await gpu();
  for (const backend of [cpu, g]) {
    await t.step(backend.name, async () => {
      let calls = 0;
      const step = jit((w: Tensor, dw: Tensor, lr: number) => {
        calls++;
        return w.sub(dw.mul(lr));
      });
      const mk = (v: number[]) => tensor(v, { backend });
      const w = mk([1, 2, 3]);
      // Several calls with new values and new learning rates before any read (numbers are runtime inputs).
      const outs = [0.1, 0.5, 2].map((lr, i) => step(w, mk([1 + i, 1, 1]), lr));
      assert.equal(step.stats().traces, 1);
      assert.equal(calls, 1, "traced once");
      const got = await readAll(outs);
      assertClose(got[0], [0.9, 1.9, 2.9], 1e-6, 1e-7, "lr 0.1");
      assertClose(got[1], [0, 1.5, 2.5], 1e-6, 1e-7, "lr 0.5");
      assertClose(got[2], [-5, 0, 1], 1e-6, 1e-7, "lr 2");
      // A new shape, a new dtype or a new tree structure retraces; a number in place of a number does not.
      step(mk([1, 2]), mk([1, 1]), 0.3);
      assert.equal(step.stats().traces, 2);
      step(mk([1, 2]), mk([1, 1]), 7);
      assert.equal(step.stats().traces, 2);
      assert.equal(calls, 2);
      const twice = jit((v: Tensor) => v.add(v));
      await twice(w).data();
      await twice(w.cast("int32")).data();
      await twice(mk([5, 6, 7])).data();
      assert.equal(twice.stats().traces, 2, "a new dtype retraces");
      const h = jit((p: { a: Tensor; b?: Tensor }) => (p.b ? p.a.add(p.b) : p.a.mul(2)));
      await h({ a: w }).data();
      await h({ a: w, b: w }).data();
      await h({ a: mk([4, 5, 6]) }).data();
      assert.equal(h.stats().traces, 2);
      // Static (non-numeric) leaves are part of the signature.
      const s = jit((x: Tensor, mode: string) => (mode === "double" ? x.mul(2) : x.neg()));
      assert.deepEqual(Array.from(await s(w, "double").data()), [2, 4, 6]);
      assert.deepEqual(Array.from(await s(w, "neg").data()), [-1, -2, -3]);
      assert.equal(s.stats().traces, 2);
      step.dispose();
      assert.equal(step.stats().traces, 0);
    });
  }
});

Deno.test("graph() prints the traced program", () => {
  const f = jit((p: { w: Tensor; b: Tensor }, x: Tensor) => nn.gelu(nn.linear(x, p.w, p.b)).sum());
  const p = { w: tensor([[1, 2], [3, 4], [5, 6]]), b: tensor([0, 1, 2]) };
  const x = tensor([[1, 1], [2, 2]]);
  const text = f.graph(p, x);
  assert.ok(text.length > 0);
  assert.match(text, /^\{ lambda/);
  assert.match(text, /matmul/);
  assert.match(text, /erf/);
  assert.match(text, /f32\[2,3\]/);
  assert.ok(text.split("\n").length > 5, text);
  assert.ok(f.stats().eqns > 5);
  assert.equal(f.stats().traces, 1);
  // graph() of the same signature does not retrace.
  f.graph(p, x);
  assert.equal(f.stats().traces, 1);
});

Deno.test("jit under grad, and grad under jit", async () => {
  const f = (x: Tensor) => nn.softmax(x.mul(x)).mul(tensor([1, 2, 3])).sum();
  const x = tensor([0.3, -0.2, 0.5]);
  const want = await grad(f)(x).data();
  const jf = jit(f);
  assertClose(await grad(jf)(x).data(), want, 1e-6, 1e-7, "grad(jit(f))");
  assert.equal(jf.stats().traces, 0, "under grad, jit traces through");
  assertClose(await jit(grad(jf))(x).data(), want, 1e-6, 1e-7, "jit(grad(jit(f)))");
  // Second order through a jitted gradient: d/dx sum(grad f).
  const g2 = (v: Tensor) => grad((u: Tensor) => jit(grad(f))(u).sum())(v);
  assertClose(await jit(g2)(x).data(), await g2(x).data(), 1e-5, 1e-6, "jit(grad(sum(jit(grad f))))");
});

Deno.test("jit outputs are owned by the caller and can be disposed", async (t) => {
  const g = await gpu();
  for (const backend of [cpu, g]) {
    await t.step(backend.name, async () => {
      const x = tensor([1, 2, 3], { backend });
      const c = tensor([10, 20, 30], { backend });
      // Outputs: a fresh value, the input itself, the same value twice, a captured constant, and a reshape alias.
      const f = jit((v: Tensor) => {
        const y = v.mul(2);
        return { y, same: v, twice: [y, y], c, flat: y.reshape([3, 1]), tag: "static" };
      });
      const o = f(x);
      assert.equal(o.tag, "static");
      o.same.dispose();
      o.twice[0].dispose();
      o.c.dispose();
      assert.ok(!x.disposed && !c.disposed);
      assert.deepEqual(Array.from(await x.data()), [1, 2, 3], "disposing an output that is the input keeps the input");
      assert.deepEqual(Array.from(await c.data()), [10, 20, 30], "disposing an output that is a constant keeps it");
      assert.deepEqual(Array.from(await o.twice[1].data()), [2, 4, 6], "a repeated output survives its twin");
      o.y.dispose();
      assert.deepEqual(Array.from(await o.flat.data()), [2, 4, 6], "an alias output survives the original");
      o.flat.dispose();
      o.twice[1].dispose();
      // Calling again works, and the outputs are fresh storage.
      const o2 = f(x);
      assert.deepEqual(Array.from(await o2.y.data()), [2, 4, 6]);
      // Calling with a disposed tensor throws.
      const gone = tensor([1, 2, 3], { backend });
      gone.dispose();
      assert.throws(() => f(gone), /jit: argument float32\[3\] was disposed/);
      if (backend.name === "webgpu") {
        const stats = (backend as unknown as { stats: { liveBytes: number } }).stats;
        const h = jit((v: Tensor) => nn.gelu(v.mul(v)).add(v).exp());
        const warm = h(x);
        await warm.data();
        warm.dispose();
        const live = stats.liveBytes;
        for (let i = 0; i < 5; i++) {
          const out = h(x);
          await out.data();
          out.dispose();
        }
        assert.equal(stats.liveBytes, live, "disposed jit outputs release their storage");
        h.dispose();
        assert.ok(stats.liveBytes < live, "dispose() releases the plan's buffers");
      }
      f.dispose();
      assert.deepEqual(Array.from(await c.data()), [10, 20, 30], "disposing the plan keeps the caller's constant");
    });
  }
});
