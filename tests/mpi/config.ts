/** The tiny run that the distributed tests train on one process and on several, with the same global batch. */
import type { PretrainConfig } from "../../train/presets.ts";
import { embeddedDataset } from "../../train/data/embedded.ts";
import type { Dataset } from "../../train/data/dataset.ts";
import { tinyPretrainConfig } from "../util.ts";

/** The tiny config with 2 blocks (so drop path acts), a batch of 8 and no warm-up (the lr moves from step 1). */
export function distributedConfig(): PretrainConfig {
  const cfg = tinyPretrainConfig();
  return { ...cfg, backbone: { ...cfg.backbone, depth: 2 }, batchSize: 8, dropPath: 0.3, warmupEpochs: 0 };
}

/** 80 training images: 10 batches of 8 per epoch. */
export function distributedData(): Dataset {
  return embeddedDataset({ seed: 3, trainPerClass: 8, testPerClass: 2 });
}
