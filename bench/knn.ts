/**
 * Weighted k-NN at Fashion-MNIST size: 60,000 training and 10,000 test features of width 96 (fmnist-tiny's
 * embedding), k 10/20/100/200, through `knnAccuracy` on the default backend. Writes bench/results/knn.{json,md}.
 */
import { type Backend, knnAccuracy, tensor } from "../mod.ts";
import { header, machine, mdTable, randomMatrix, writeResults } from "./util.ts";

const TRAIN = 60_000;
const TEST = 10_000;
const DIM = 96;
const CLASSES = 10;

/** Features near one of `CLASSES` random centres (label = centre), so the vote is not trivial. */
function features(n: number, seed: number): { x: Float32Array; y: Int32Array } {
  const centres = randomMatrix(CLASSES * DIM, 1);
  const x = randomMatrix(n * DIM, seed);
  const y = Int32Array.from({ length: n }, (_, i) => i % CLASSES);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < DIM; d++) x[i * DIM + d] = 2 * x[i * DIM + d] + centres[y[i] * DIM + d];
  }
  return { x, y };
}

/** Runs the benchmark on `backend` and writes its results. */
export async function run(backend: Backend): Promise<void> {
  const m = machine(backend);
  const train = features(TRAIN, 2);
  const test = features(TEST, 3);
  const trainX = tensor(train.x, { shape: [TRAIN, DIM], backend });
  const testX = tensor(test.x, { shape: [TEST, DIM], backend });
  const t0 = performance.now();
  const acc = await knnAccuracy(trainX, train.y, testX, test.y, CLASSES);
  const seconds = (performance.now() - t0) / 1000;
  trainX.dispose();
  testX.dispose();
  const md = [
    header("Weighted k-NN at Fashion-MNIST size", m, [
      `${TRAIN} train × ${TEST} test features of width ${DIM}, ${CLASSES} classes, k 10/20/100/200, T 0.07, ` +
      "chunks of 128 test rows (device: similarities and the k = 200 threshold; host: ranking of the candidates).",
      "",
    ]),
    mdTable(
      ["seconds", "test rows/s", "top-1 k=10/20/100/200"],
      [[seconds.toFixed(1), (TEST / seconds).toFixed(0), [10, 20, 100, 200].map((k) => acc[k].toFixed(3)).join(" / ")]],
      [true, true, false],
    ),
  ].join("\n");
  await writeResults("knn", { ...m, train: TRAIN, test: TEST, dim: DIM, seconds, accuracy: acc }, md);
}
