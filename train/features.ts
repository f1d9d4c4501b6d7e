/** Frozen-feature extraction over a dataset split, in device batches (k-NN and linear probing share it). */
import type { Tensor } from "../ops/tensor.ts";
import type { Backend } from "../ops/backend.ts";
import { concat } from "../ops/api.ts";
import { fromTyped } from "../ops/create.ts";
import type { Dataset } from "./data/dataset.ts";

/**
 * Runs `forward` (images `[m, C, H, W]` in [0, 1] → features `[m, F]`, typically jitted) over the first `limit`
 * images of a split in batches of `batch`, and returns all features `[n, F]`. Each batch is awaited, which keeps
 * the device queue and the event loop responsive.
 *
 * @example
 * ```ts ignore
 * const feats = await splitFeatures(ds, "test", backend, jit((x) => vit(params, x, cfg)));
 * ```
 */
export async function splitFeatures(
  ds: Dataset,
  split: "train" | "test",
  backend: Backend,
  forward: (images: Tensor) => Tensor,
  limit?: number,
  batch = 256,
): Promise<Tensor> {
  const s = ds[split];
  const n = Math.min(s.n, limit ?? s.n);
  const per = ds.channels * ds.size * ds.size;
  const parts: Tensor[] = [];
  for (let i = 0; i < n; i += batch) {
    const m = Math.min(batch, n - i);
    const x = fromTyped(
      s.images.subarray(i * per, (i + m) * per),
      [m, ds.channels, ds.size, ds.size],
      "float32",
      backend,
    );
    parts.push(forward(x));
    x.dispose();
    await parts[parts.length - 1].data();
  }
  if (parts.length === 1) return parts[0];
  const all = concat(parts, 0);
  parts.forEach((p) => p.dispose());
  return all;
}
