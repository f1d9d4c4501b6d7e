/** The compiled WebGPU plan: fusion, transpose folding, donation and the no-allocation-after-warm-up rule. */
import assert from "node:assert/strict";
import { grad, jit, matmul, mT, nn, random, tensor, tree } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { assertClose, gpu } from "./util.ts";

const stats = (b: unknown) => (b as { stats: { buffersCreated: number; dispatches: number } }).stats;

Deno.test("jit plan: elementwise chains and reduction prologues fuse; transposes fold into matmul", async () => {
  const backend = await gpu();
  if (backend.name !== "webgpu") return;
  const x = tensor([[1, 2, 3], [4, 5, 6]], { backend });
  const softmax = jit((v: Tensor) => nn.softmax(v.mul(2).add(1)));
  const y = softmax(x);
  // max-reduce (prologue: mul, add), sum-reduce (prologue: exp(sub)), and one elementwise division.
  assert.equal(softmax.stats().plan!.dispatches, 3);
  assertClose(await y.data(), await nn.softmax(x.mul(2).add(1)).data(), 1e-5, 1e-6);

  const a = random.normal(random.key(1, backend), [3, 5, 8]);
  const b = random.normal(random.key(2, backend), [3, 7, 8]);
  const f = jit((p: Tensor, q: Tensor) => matmul(p, mT(q)));
  assert.doesNotMatch(f.graph(a, b), /transpose/);
  assert.match(f.graph(a, b), /transB=true/);
  assertClose(await f(a, b).data(), await matmul(a, mT(b)).data(), 1e-5, 1e-6);
});

Deno.test("jit plan: x·Wᵀ reads a transposed copy of a small W, narrow Aᵀ·B runs as (Bᵀ·A)ᵀ; results unchanged", async () => {
  const backend = await gpu();
  if (backend.name !== "webgpu") return;
  const x = random.normal(random.key(3, backend), [2048, 64]);
  const w = random.normal(random.key(4, backend), [128, 64]);
  const linear = jit((p: Tensor, q: Tensor) => matmul(p, mT(q)));
  const y = linear(x, w);
  assert.equal(linear.stats().plan!.byPrim.transpose, 1, "one transpose of W");
  assertClose(await y.data(), await matmul(x, mT(w)).data(), 1e-4, 1e-4);

  const a = random.normal(random.key(5, backend), [2048, 32]);
  const b = random.normal(random.key(6, backend), [2048, 128]);
  const weightGrad = jit((p: Tensor, q: Tensor) => matmul(mT(p), q));
  const g = weightGrad(a, b);
  assert.deepEqual(g.shape, [32, 128]);
  assert.equal(weightGrad.stats().plan!.byPrim.transpose, 1, "one transpose of the swapped product");
  assertClose(await g.data(), await matmul(mT(a), b).data(), 1e-4, 1e-4);
});

Deno.test("jit plan: donated parameters are updated in place and no buffer is created after the first call", async () => {
  const backend = await gpu();
  if (backend.name !== "webgpu") return;
  const loss = (p: { w: Tensor; b: Tensor }, x: Tensor) => nn.linear(x, p.w, p.b).pow(2).mean();
  const sgd = (p: { w: Tensor; b: Tensor }, x: Tensor, lr: number) =>
    tree.map((v: Tensor, g: Tensor) => v.sub(g.mul(lr)), p, grad(loss)(p, x)) as { w: Tensor; b: Tensor };
  const step = jit(sgd, { donate: [0] });
  const x = random.normal(random.key(3, backend), [16, 4]);
  const init = () => ({ w: random.normal(random.key(4, backend), [2, 4]), b: tensor([0.1, -0.2], { backend }) });
  // Reference: eager steps.
  let ref = init();
  for (let i = 0; i < 3; i++) ref = sgd(ref, x, 0.1);
  let p = init();
  const handle = (t: Tensor) => (t.source as { ref: { handle: unknown } }).ref.handle;
  const w0 = handle(p.w);
  const counts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const before = stats(backend).buffersCreated;
    const old = p;
    p = step(p, x, 0.1);
    counts.push(stats(backend).buffersCreated - before);
    assert.ok(old.w.disposed, "a donated argument is consumed");
  }
  assert.equal(handle(p.w), w0, "the parameter buffer was reused in place");
  assert.deepEqual(counts.slice(1), [0, 0]);
  assertClose(await p.w.data(), await ref.w.data(), 1e-5, 1e-6, "donated steps equal eager steps");

  // A donated argument whose storage is shared (here: passed twice) is copied, never overwritten.
  const shared = tensor([1, 2, 3, 4], { backend });
  const twice = jit((u: Tensor, v: Tensor) => u.add(v).mul(2), { donate: [0] });
  const out = twice(shared, shared);
  assert.deepEqual(Array.from(await out.data()), [4, 8, 12, 16]);
});

Deno.test("jit plan: tune() picks matmul tiles per shape class and the retuned plan gives the same values", async () => {
  const backend = await gpu();
  if (backend.name !== "webgpu") return;
  const a = random.normal(random.key(5, backend), [2, 24, 20]);
  const b = random.normal(random.key(6, backend), [20, 12]);
  const f = jit((p: Tensor, q: Tensor) => nn.gelu(matmul(p, q)).sum(-1));
  const before = await f(a, b).data();
  await f.tune(a, b);
  const after = await f(a, b).data();
  assertClose(after, before, 1e-5, 1e-6, "tuned vs default tile");
  assert.equal(f.stats().traces, 1);
});
