/** Run by tests/distributed_test.ts under `mpiexec -n 2`: each rank prints one JSON line of collective results. */
import { init } from "../../distributed/mod.ts";
import { initBackend, tensor } from "../../mod.ts";

await initBackend("cpu");
const comm = await init({ mpi: "required" });
const r = comm.rank;
const tree = { a: tensor([[r, 1.5], [2 * r, -r]]), b: [tensor([r + 1], { dtype: "int32" }), tensor([0.25 * r])] };
const sum = await comm.allReduceSum(tree);
const mean = await comm.allReduceMean({ a: tree.a, c: tree.b[1] });
const max = await comm.allReduceMax([tensor([r, -r])]);
const bcast = await comm.broadcast({ x: tensor([r + 10, r + 20]) }, comm.size - 1);
const numbers = await comm.allReduceNumbers([r, 1]);
await comm.barrier();
console.log(JSON.stringify({
  rank: r,
  size: comm.size,
  library: comm.library,
  sum: {
    a: await sum.a.toArray(),
    b0: await sum.b[0].toArray(),
    b0dtype: sum.b[0].dtype,
    b1: await sum.b[1].toArray(),
  },
  mean: { a: await mean.a.toArray(), c: await mean.c.toArray() },
  max: await max[0].toArray(),
  bcast: await bcast.x.toArray(),
  numbers,
}));
comm.finalize();
