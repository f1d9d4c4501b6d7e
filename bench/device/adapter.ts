/**
 * Phase `adapter` of the device benchmark: the WebGPU adapter (vendor, architecture, description, driver), its
 * features and every limit, and the check that it is not a software rasterizer. A full run refuses a software
 * adapter (exit 3: the Vulkan loader found no NVIDIA driver); the dry run accepts it.
 *
 * @module
 */
import { progress } from "../util.ts";
import { isDry, isSoftwareAdapter, writeFragment } from "./common.ts";

/** What the adapter phase records. */
export interface AdapterFragment {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  software: boolean;
  /** A short name for file names: `nvidia-h200`, `llvmpipe`. */
  slug: string;
  features: string[];
  limits: Record<string, number>;
  /** Vulkan driver selection as run.sh left it. */
  env: Record<string, string>;
}

/** A file-name-safe short name for the adapter. */
export function adapterSlug(description: string): string {
  const s = description.toLowerCase().replace(/\(.*?\)/g, " ").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return s.slice(0, 40) || "unknown";
}

const gpu = navigator.gpu;
if (!gpu) throw new Error("bench/device adapter: WebGPU is unavailable (run Deno with --unstable-webgpu)");
const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) {
  throw new Error(
    "bench/device adapter: requestAdapter() returned null: no Vulkan driver found (see VK_DRIVER_FILES in run.sh)",
  );
}
const info = adapter.info;
const limits: Record<string, number> = {};
for (const k in adapter.limits) {
  const v = (adapter.limits as unknown as Record<string, unknown>)[k];
  if (typeof v === "number") limits[k] = v;
}
const description = info.description || `${info.vendor} ${info.device}`.trim() || "unknown adapter";
const software = info.isFallbackAdapter || isSoftwareAdapter(`${description} ${info.device} ${info.vendor}`);
const env: Record<string, string> = {};
for (const k of ["VK_DRIVER_FILES", "VK_ICD_FILENAMES", "DENO_WEBGPU_BACKEND"]) {
  const v = Deno.env.get(k);
  if (v) env[k] = v;
}
const fragment: AdapterFragment = {
  vendor: info.vendor,
  architecture: info.architecture,
  device: info.device,
  description,
  isFallbackAdapter: info.isFallbackAdapter,
  software,
  slug: adapterSlug(description),
  features: [...adapter.features].sort(),
  limits,
  env,
};
await writeFragment("adapter", fragment);
progress(`adapter: ${description} (vendor ${info.vendor || "?"}, ${software ? "software" : "hardware"})`);
if (software && !isDry()) {
  console.error(
    `bench/device: the adapter is a software one (${description}): the NVIDIA Vulkan driver was not selected ` +
      "(check VK_DRIVER_FILES and the Vulkan loader); use --dry to run on it anyway",
  );
  Deno.exit(3);
}
