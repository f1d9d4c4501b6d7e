/** Acquiring a WebGPU device with the adapter's limits, and a clear message when there is none. */
import { WebGpuBackend } from "./backend.ts";

/** Features this library can use when the adapter offers them. */
export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
}

/** Thrown when WebGPU is unavailable, with what to do about it. */
export class NoGpuError extends Error {
  /** The error's name. */
  override name = "NoGpuError";
}

/** Requests an adapter and a device with raised limits; throws `NoGpuError` when there is no adapter. */
export async function createWebGpuBackend(): Promise<WebGpuBackend & { features: GpuFeatures }> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw new NoGpuError("WebGPU is not available: run Deno with --unstable-webgpu (or use a browser with WebGPU)");
  }
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new NoGpuError(
      "navigator.gpu.requestAdapter() returned null: no GPU driver found. On Debian install " +
        "mesa-vulkan-drivers and libvulkan1 and set DENO_WEBGPU_BACKEND=vulkan, or use the cpu backend",
    );
  }
  const want = [
    "maxStorageBuffersPerShaderStage",
    "maxBufferSize",
    "maxStorageBufferBindingSize",
    "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
  ] as const;
  const requiredLimits: Record<string, number> = {};
  for (const k of want) requiredLimits[k] = adapter.limits[k];
  const features: GPUFeatureName[] = [];
  const f16 = adapter.features.has("shader-f16");
  const subgroups = adapter.features.has("subgroups" as GPUFeatureName);
  if (f16) features.push("shader-f16");
  if (subgroups) features.push("subgroups" as GPUFeatureName);
  // Timestamps power the plan profiler (`profileJit`); optional.
  if (adapter.features.has("timestamp-query")) features.push("timestamp-query");
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  const info = adapter.info;
  const desc = `${info.description || info.vendor || "unknown adapter"}${info.isFallbackAdapter ? " (software)" : ""}`;
  const backend = new WebGpuBackend(device, desc);
  device.addEventListener?.(
    "uncapturederror",
    (e) => backend.reportError((e as GPUUncapturedErrorEvent).error.message),
  );
  return Object.assign(backend, { features: { shaderF16: f16, subgroups } });
}
