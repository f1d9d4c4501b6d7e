/** The CPU backend: host typed arrays and the reference implementations from the rule table. */
import type { Backend } from "./backend.ts";
import { allocHost, type DType, type HostArray } from "./dtype.ts";
import type { Aval, Prim, PrimParams } from "./prim.ts";
import { RULES } from "./table.ts";

/** The CPU backend singleton: float32, float64, int32, uint32 and bool. It is the numerical oracle. */
export const cpu: Backend = {
  name: "cpu",
  supports: (_dtype: DType) => true,
  upload(data: HostArray, aval: Aval): HostArray {
    const copy = allocHost(aval.dtype, data.length);
    copy.set(data);
    return copy;
  },
  read(handle: unknown): Promise<HostArray> {
    return Promise.resolve((handle as HostArray).slice());
  },
  run<P extends Prim>(prim: P, ins: readonly unknown[], inAvals: readonly Aval[], params: PrimParams[P], out: Aval) {
    return RULES[prim].cpu(ins as HostArray[], inAvals, params, out);
  },
  release() {},
};
