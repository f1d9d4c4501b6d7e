/**
 * jit on a WebGPU device with the spec's default limits, as browsers may give (Chromium's SwiftShader allows 10
 * storage buffers per stage, the default is 8; lavapipe allows 32): fused kernels must not read more buffers
 * than the device allows.
 */
import assert from "node:assert/strict";
import { cpu, fromTyped, jit, sum, type Tensor } from "../mod.ts";
import { WebGpuBackend } from "../wgsl/backend.ts";
import { assertClose, randArray } from "./util.ts";

const noGpu = Deno.env.get("IBOT_TEST_NO_GPU") === "1";
if (noGpu) console.log("webgpu_limits_test: ignored (IBOT_TEST_NO_GPU=1: no WebGPU adapter)");

/** A pairwise sum tree over all arguments: one fused kernel reading every argument unless split. */
function wideSum(xs: Tensor[]): Tensor {
  let level = xs.map((x, i) => x.mul(i + 1));
  while (level.length > 1) {
    const next: Tensor[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? level[i].add(level[i + 1]) : level[i]);
    level = next;
  }
  return level[0];
}

Deno.test({
  name: "jit: fused kernels respect maxStorageBuffersPerShaderStage (a device with the default limit of 8)",
  ignore: noGpu,
  async fn() {
    const adapter = await navigator.gpu.requestAdapter();
    assert.ok(adapter, "no WebGPU adapter");
    const device = await adapter.requestDevice(); // default limits: 8 storage buffers per stage
    assert.equal(device.limits.maxStorageBuffersPerShaderStage, 8);
    const backend = new WebGpuBackend(device, "default limits");
    device.addEventListener(
      "uncapturederror",
      (e) => backend.reportError((e as GPUUncapturedErrorEvent).error.message),
    );
    try {
      const shapes = Array.from({ length: 12 }, (_, i) => (i % 3 === 2 ? [7] : [5, 7])); // some broadcast
      const host = shapes.map((s, i) => randArray(100 + i, s.reduce((a, b) => a * b, 1)));
      const onGpu = host.map((h, i) => fromTyped(Float32Array.from(h), shapes[i], "float32", backend));
      const onCpu = host.map((h, i) => fromTyped(h, shapes[i], "float64", cpu));
      const elementwise = jit((...xs: Tensor[]) => wideSum(xs));
      const reduced = jit((...xs: Tensor[]) => sum(wideSum(xs), -1)); // a reduction with a 12-input prologue
      for (const [f, name] of [[elementwise, "elementwise"], [reduced, "reduction"]] as const) {
        const got = f(...onGpu) as Tensor;
        assertClose(await got.data(), await (f(...onCpu) as Tensor).data(), 1e-5, 1e-5, name);
        got.dispose();
      }
      for (const t of onGpu) t.dispose();
    } finally {
      device.destroy();
    }
  },
});
