/**
 * Memory: the WebGPU pool stays flat over a jitted loop that uploads a fresh batch every step, the pool is bounded
 * in bytes, and a plan's peak is known (and refused when over a limit) before any of its buffers exists.
 */
import assert from "node:assert/strict";
import {
  backendMemory,
  cpu,
  evalShape,
  fromTyped,
  grad,
  jit,
  nn,
  parseBytes,
  placeholder,
  PlanMemoryError,
  random,
  type Tensor,
  tidy,
  tree,
} from "../mod.ts";
import type { WebGpuBackend } from "../wgsl/backend.ts";
import { gpu, rng } from "./util.ts";
import { pretrain } from "../train/pretrain.ts";
import { PRESETS } from "../train/presets.ts";
import { embeddedDataset } from "../train/data/embedded.ts";

const noGpu = Deno.env.get("IBOT_TEST_NO_GPU") === "1";
if (noGpu) console.log("memory_test: WebGPU pool tests ignored (IBOT_TEST_NO_GPU=1: no WebGPU adapter)");

Deno.test({
  name: "pool: pooled and live bytes constant over 200 jitted steps with a fresh upload per step",
  ignore: noGpu,
  async fn() {
    const backend = await gpu() as WebGpuBackend;
    const loss = (p: { w: Tensor; b: Tensor }, x: Tensor) => nn.gelu(x.matmul(p.w).add(p.b)).pow(2).mean();
    const step = jit(
      (p: { w: Tensor; b: Tensor }, x: Tensor, lr: number) =>
        tree.map((v: Tensor, g: Tensor) => v.sub(g.mul(lr)), p, grad(loss)(p, x)) as { w: Tensor; b: Tensor },
      { donate: [0] },
    );
    let p = tidy(() => ({
      w: random.normal(random.key(1, backend), [24, 8], { std: 0.1 }),
      b: random.normal(random.key(2, backend), [8], { std: 0.1 }),
    }));
    const r = rng(3);
    const batch = new Float32Array(64 * 24);
    const pooled: number[] = [];
    const live: number[] = [];
    const created: number[] = [];
    for (let i = 0; i < 200; i++) {
      for (let j = 0; j < batch.length; j++) batch[j] = r() * 2 - 1;
      const x = fromTyped(batch, [64, 24], "float32", backend); // a fresh upload, as a data loader does
      p = step(p, x, 0.05);
      x.dispose();
      const m = backendMemory(backend)!;
      pooled.push(m.pooledBytes);
      live.push(m.liveBytes);
      created.push(m.buffersCreated);
    }
    const warm = 3;
    assert.deepEqual(new Set(pooled.slice(warm)), new Set([pooled[warm]]), `pooled bytes: ${pooled.join(" ")}`);
    assert.deepEqual(new Set(live.slice(warm)), new Set([live[warm]]), "live bytes");
    assert.equal(created[199], created[warm], "no buffer created after warm-up");
    assert.ok(Number.isFinite((await p.w.data())[0]));
    step.dispose();
    tree.map((t: Tensor) => t.dispose(), p);
  },
});

Deno.test({
  name: "pool: bounded in bytes, the least recently pooled buffers are destroyed; memory() reports the peaks",
  ignore: noGpu,
  async fn() {
    const backend = await gpu() as WebGpuBackend;
    backend.trim();
    const limit = backend.poolLimitBytes;
    try {
      backend.poolLimitBytes = 64 * 1024;
      backend.resetPeak();
      const before = backend.memory();
      // 40 buffers of 4 KiB each (160 KiB) released together: only 64 KiB may stay pooled.
      const bufs = Array.from({ length: 40 }, () => backend.alloc(4096));
      const held = backend.memory();
      assert.equal(held.liveBytes - before.liveBytes, 40 * 4096);
      assert.equal(held.peakLiveBytes, held.liveBytes);
      for (const b of bufs) backend.release(b);
      const after = backend.memory();
      assert.equal(after.pooledBytes, 64 * 1024, "the pool holds exactly its bound");
      assert.equal(after.liveBytes, before.liveBytes);
      assert.equal(after.peakLiveBytes, held.liveBytes, "the peak is kept");
      // The survivors are the most recently released: allocating them back gives those buffers.
      const again = backend.alloc(4096);
      assert.equal(again.buffer, bufs[39].buffer);
      backend.release(again);
      // A buffer larger than the bound is never pooled.
      const big = backend.alloc(128 * 1024);
      backend.release(big);
      assert.equal(backend.memory().pooledBytes, 64 * 1024);
      await backend.sync();
    } finally {
      backend.poolLimitBytes = limit;
    }
  },
});

Deno.test({
  name: "pool: an upload into a reused buffer does not overtake queued commands that read its old contents",
  ignore: noGpu,
  async fn() {
    const backend = await gpu() as WebGpuBackend;
    const a = fromTyped(new Float32Array([1, 2, 3, 4]), [4], "float32", backend);
    const doubled = a.mul(2); // encoded, not yet submitted
    a.dispose(); // a's buffer goes back to the pool ...
    const b = fromTyped(new Float32Array([7, 7, 7, 7]), [4], "float32", backend); // ... and is reused here
    assert.deepEqual(Array.from(await doubled.data()), [2, 4, 6, 8]);
    assert.deepEqual(Array.from(await b.data()), [7, 7, 7, 7]);
    doubled.dispose();
    b.dispose();
  },
});

/** A two-layer MLP loss gradient: its plan holds [256, 1024] activations. */
const mlpGrad = (w1: Tensor, w2: Tensor, x: Tensor) =>
  grad((u: Tensor) => nn.gelu(x.matmul(u)).matmul(w2).pow(2).mean())(w1);

for (const name of ["webgpu", "cpu"] as const) {
  Deno.test({
    name: `plan memory (${name}): a plan over maxMemory is refused before any buffer exists, naming its peak`,
    ignore: name === "webgpu" && noGpu,
    async fn() {
      const backend = name === "cpu" ? cpu : await gpu();
      const args = [placeholder([64, 1024], "float32", backend), placeholder([1024, 16], "float32", backend)];
      const x = placeholder([256, 64], "float32", backend);
      const free = jit(mlpGrad);
      const peak = free.memory(args[0], args[1], x).peakBytes;
      assert.ok(peak >= 256 * 1024 * 4, `peak ${peak} holds the [256, 1024] activation`);
      const tight = jit(mlpGrad, { maxMemory: Math.floor(peak / 2) });
      const created = backendMemory(backend)?.buffersCreated;
      assert.throws(() => tight.memory(args[0], args[1], x), (e: unknown) => {
        assert.ok(e instanceof PlanMemoryError);
        assert.equal(e.limit, "maxMemory");
        assert.equal(e.memory.peakBytes, peak);
        assert.match(
          e.message,
          /jit: the plan needs [\d.]+ [KM]iB at its peak, over the limit of [\d.]+ [KM]iB \(maxMemory\)/,
        );
        assert.match(e.message, /largest tensors: f32\[256,1024\] 1\.00 MiB \(\w+\)/);
        assert.match(e.message, /micro-batches or rematerialise/);
        assert.equal(e.message.split("\n").length, 1, "one line");
        return true;
      });
      // A real call is refused the same way, before the plan creates any buffer.
      const [w1, w2, xs] = [[64, 1024], [1024, 16], [256, 64]].map((s, i) => random.normal(random.key(i, backend), s));
      const before = backendMemory(backend)?.buffersCreated;
      assert.throws(() => tight(w1, w2, xs), PlanMemoryError);
      assert.equal(backendMemory(backend)?.buffersCreated, before, "no buffer created by the refused plan");
      assert.equal(created === undefined, name === "cpu");
      // Within the limit it runs.
      const ok = jit(mlpGrad, { maxMemory: peak });
      const g = ok(w1, w2, xs);
      assert.deepEqual(g.shape, [64, 1024]);
      for (const t of [g, w1, w2, xs]) t.dispose();
      for (const f of [free, tight, ok]) f.dispose();
    },
  });
}

Deno.test({
  name: "plan memory (webgpu): a tensor over maxStorageBufferBindingSize is refused without allocating it",
  ignore: noGpu,
  async fn() {
    const backend = await gpu() as WebGpuBackend;
    const binding = backend.device.limits.maxStorageBufferBindingSize;
    const rows = Math.ceil((2 * binding) / 4 / 1024);
    const f = jit((x: Tensor) => x.mul(2).sum(-1));
    const before = backend.memory().buffersCreated;
    assert.throws(() => f.memory(placeholder([rows, 1024], "float32", backend)), (e: unknown) => {
      assert.ok(e instanceof PlanMemoryError);
      assert.equal(e.limit, "maxStorageBufferBindingSize");
      assert.match(e.message, new RegExp(`largest tensors: f32\\[${rows},1024\\]`));
      return true;
    });
    assert.equal(backend.memory().buffersCreated, before);
  },
});

Deno.test("evalShape: output shapes of a function without computing it; parseBytes units", () => {
  const out = evalShape(
    (x: Tensor, k: Tensor) => ({ y: x.matmul(x.transpose([1, 0])), n: random.normal(k, [3, 5]), s: 2 }),
    placeholder([4000, 1024], "float32", cpu),
    random.key(0, cpu),
  );
  assert.deepEqual(out.y.shape, [4000, 4000]);
  assert.deepEqual(out.n.shape, [3, 5]);
  assert.equal(out.s, 2);
  assert.ok(out.y.disposed, "a placeholder has no storage");
  assert.equal(parseBytes("6GiB"), 6 * 2 ** 30);
  assert.equal(parseBytes("6GB"), 6e9);
  assert.equal(parseBytes("512m"), 512 * 2 ** 20);
  assert.equal(parseBytes("1000"), 1000);
  assert.throws(() => parseBytes("lots"), /not a byte size/);
});

Deno.test({
  name: "pretrain: a step over maxMemory is refused before the state or the plan is allocated",
  ignore: noGpu,
  async fn() {
    const backend = await gpu();
    const live = backendMemory(backend)!.liveBytes;
    await assert.rejects(
      () => pretrain(PRESETS["embedded-small"], embeddedDataset(), { backend, seed: 0, maxMemory: 2 ** 20 }),
      (e: unknown) => {
        assert.ok(e instanceof PlanMemoryError);
        assert.ok(e.memory.peakBytes > 2 ** 20);
        return true;
      },
    );
    assert.equal(backendMemory(backend)!.liveBytes, live, "nothing left allocated");
  },
});

Deno.test({
  name: "pretrain CLI: --arch vit_large --batch-size 4000 is refused in one line (exit 2) before allocating",
  ignore: noGpu,
  async fn() {
    const script = new URL("../examples/pretrain.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--unstable-webgpu", script, "--arch", "vit_large", "--batch-size", "4000", "--steps", "1"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr).trim();
    assert.equal(out.code, 2, err);
    assert.equal(err.split("\n").length, 1, err);
    assert.match(
      err,
      /^error: the training step needs a f32\[\d+,\d+\] tensor \(a [\d.]+ GiB buffer\), over the device's maxStorageBufferBindingSize of [\d.]+ MiB \(peak [\d.]+ GiB\); largest tensors: .*; lower it with --batch-size, --micro-batch or --remat$/,
    );
  },
});
