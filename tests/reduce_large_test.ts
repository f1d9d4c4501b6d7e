/**
 * Reductions of more than 64 Ki elements per output. llvmpipe silently ends a shader invocation's loops after
 * 65,535 iterations, so a one-pass reduction kernel summed only the first 64 Ki elements (the fmnist-tiny CLS
 * loss at batch >= 64 was 2-4x too small on WebGPU); `ops/api.ts` folds them in stages. WebGPU against the
 * float64 CPU backend, eager and under jit, values and gradients.
 */
import assert from "node:assert/strict";
import { grad, jit, random, toBackend } from "../mod.ts";
import * as api from "../ops/api.ts";
import type { Tensor } from "../ops/tensor.ts";
import { assertClose, cpu, gpu } from "./util.ts";

const CASES: { name: string; shape: number[]; axes?: number[] }[] = [
  { name: "all of [2, 128, 1024] (the CLS loss sum)", shape: [2, 128, 1024] },
  { name: "axes [0, 1] of [300, 250, 3]", shape: [300, 250, 3], axes: [0, 1] },
  { name: "one prime-length axis [100003] (padded chunks)", shape: [100003] },
  { name: "axis 1 of [3, 70001, 2]", shape: [3, 70001, 2], axes: [1] },
];

for (const c of CASES) {
  Deno.test(`large reductions (webgpu vs cpu): sum, mean, max, min over ${c.name}`, async () => {
    const backend = await gpu();
    const x = random.normal(random.key(7, backend), c.shape);
    const x64 = api.cast(await toBackend(x, "cpu"), "float64");
    const ops: [string, (t: Tensor) => Tensor][] = [
      ["sum", (t) => api.sum(t, c.axes)],
      ["mean", (t) => api.mean(t, c.axes)],
      ["max", (t) => api.max(t, c.axes, true)],
      ["min", (t) => api.min(t, c.axes)],
    ];
    for (const [name, f] of ops) {
      const want = await f(x64).data();
      const eager = await f(x).data();
      const jitted = await jit(f)(x).data();
      const n = c.shape.reduce((a, d) => a * d, 1);
      const atol = name === "sum" ? 1e-5 * n : 1e-5; // float32 accumulation over n terms
      assertClose(eager, want, 1e-4, atol, `${name} eager`);
      assertClose(jitted, want, 1e-4, atol, `${name} jit`);
    }
    // The gradient of a staged max is 1 at the maximum only.
    const g = await grad((t: Tensor) => api.max(t))(x).data();
    assert.equal(Array.from(g as Float32Array).reduce((a, v) => a + v, 0), 1);
  });
}

Deno.test("large reductions: a staged sum is what the CPU computes, on the CPU backend too", async () => {
  const x = random.uniform(random.key(3, cpu), [200001]);
  const want = Array.from(await x.data()).reduce((a, v) => a + v, 0);
  assertClose([await api.sum(x).item()], [want], 1e-5, 0);
});

Deno.test("eager kernels: pad with Infinity after pad with -Infinity gets its own kernel (cache key keeps the sign)", async () => {
  const backend = await gpu();
  const x = api.cast(random.uniform(random.key(1, backend), [3]), "float32");
  const lo = await api.pad(x, [0], [1], -Infinity).data();
  const hi = await api.pad(x, [0], [1], Infinity).data();
  const nan = await api.pad(x, [0], [1], NaN).data();
  assert.deepEqual([lo[3], hi[3], Number.isNaN(nan[3])], [-Infinity, Infinity, true]);
});
