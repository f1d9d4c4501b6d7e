/**
 * Run by tests/distributed_pretrain_test.ts under `mpiexec -n N`: a few steps of the tiny test config over the
 * job, each rank saving its final state to `OUT/rank-R.safetensors` (rank 0 also writes the run's checkpoint
 * and metrics to OUT). Arguments: OUT STEPS MICRO_BATCH [FAIL_RANK FAIL_STEP kill|raise]; with the last three,
 * that rank kills itself (SIGKILL) or throws a DataError once it has finished step FAIL_STEP; the run goes
 * through `inJob` as `examples/pretrain.ts --distributed` does.
 */
import { init } from "../../distributed/mod.ts";
import { initBackend } from "../../mod.ts";
import { pretrain } from "../../train/pretrain.ts";
import { saveTrainingState } from "../../train/checkpoint.ts";
import { DataError } from "../../errors.ts";
import { inJob } from "../../examples/lib/job.ts";
import { distributedConfig, distributedData } from "./config.ts";

const [out, steps, micro, failRank, failStep, how] = Deno.args;
const backend = await initBackend("cpu");
const comm = await init({ mpi: "required" });
const result = await inJob(
  comm,
  "Usage: pretrain_worker.ts",
  [],
  () =>
    pretrain(distributedConfig(), distributedData(), {
      backend,
      seed: 5,
      steps: Number(steps),
      microBatch: Number(micro),
      out,
      logEvery: 1,
      checkpointEvery: 1,
      evaluate: false,
      comm,
      onProgress: (p) => {
        if (failRank !== undefined && comm.rank === Number(failRank) && p.step === Number(failStep)) {
          if (how === "kill") Deno.kill(Deno.pid, "SIGKILL");
          throw new DataError(`injected failure after step ${p.step}`);
        }
      },
    }),
);
await saveTrainingState(`${out}/rank-${comm.rank}.safetensors`, result.state, {
  iteration: result.steps,
  preset: "distributed-test",
  batchSize: distributedConfig().batchSize,
  seed: 5,
});
comm.finalize();
