/**
 * The subsystem contract (model/subsystem.ts) for a small kernel table whose state
 * travels by value: fos1's routes, rules, zones, NAT, and the links, VLANs and addresses
 * of its interfaces. A table gives four things — how to read it, how to resolve an intent
 * against what was read, the planner (model/plan.ts) and the converging sync of its
 * system module — and gets every verb of the contract:
 *
 *   read     the table                           plan     resolve + planner → diff, expected state
 *   snapshot the table as read (by value)        apply    read, resolve, sync (idempotent)
 *   check    planner(read-back, expected) = []   restore  sync(snapshot)
 */
import { type Operation, renderOperation } from '../../model/plan';
import { type CheckOf, type IntentOf, type ReadScope, type StateCheck, type Subsystem, type SubsystemContract, countLines } from '../../model/subsystem';

/** What a table subsystem is made of. `T` is the table as read, `D` as desired. */
export interface TableSpec<S extends Subsystem, T, D> {
  name: S;
  /** Reads the table (through `reads`, so tables that share a kernel listing read it once). */
  read(reads: ReadScope): Promise<T>;
  /** The table a change wants: `intent` resolved against the table as read. */
  resolve(observed: T, intent: IntentOf<S>): D;
  /** The planner: operations turning `observed` into `desired`, in apply order. */
  plan(observed: T, desired: T | D): Operation[];
  /** Converges the kernel to `desired` and returns what it did (`restore`: putting a snapshot back). */
  sync(desired: T | D, options: { restore: boolean }): Promise<Operation[]>;
  /**
   * What of `snapshot` a restore can bring back, given the table as it is now
   * (interfaces someone else removed are not fos1's to re-create). All of it by default.
   */
  restorable?(snapshot: T | D, present: T): T | D;
  /** The table in a few words (`12 routes`). */
  describe(observed: T): string;
}

/** A table subsystem: the contract's verbs from a {@link TableSpec}. */
export function tableSubsystem<S extends Subsystem, T, D>(spec: TableSpec<S, T, D>): SubsystemContract<S, T> {
  type Check = StateCheck<T | D>;
  const asCheck = (check: Check) => check as unknown as CheckOf<S>;
  const differences = (present: T, check: Check): string[] => {
    const expected = check.restore && spec.restorable ? spec.restorable(check.state, present) : check.state;
    return spec.plan(present, expected).map((op) => `missing change: ${renderOperation(op)}`);
  };
  return {
    name: spec.name,
    read: (_intent, reads) => spec.read(reads),
    async plan(observed, intent) {
      const desired = spec.resolve(observed, intent);
      const operations = spec.plan(observed, desired).map(renderOperation);
      return { plan: { operations, counts: countLines(operations) }, expected: asCheck({ kind: 'state', state: desired }) };
    },
    // By value, and reading cost nothing extra: a dry run gets it too.
    snapshot: async (observed) => ({ check: asCheck({ kind: 'state', state: observed, restore: true }) }),
    describe: (observed) => spec.describe(observed),
    async apply(intent) {
      if ((intent as { mode: string }).mode === 'keep') return { operations: [] };
      const observed = await spec.read(onceScope());
      return { operations: (await spec.sync(spec.resolve(observed, intent), { restore: false })).map(renderOperation) };
    },
    check: async (check, reads) => differences(await spec.read(reads), check as unknown as Check),
    restore: async (snapshot) => ({ operations: (await spec.sync((snapshot.check as unknown as Check).state, { restore: true })).map(renderOperation) }),
  };
}

/** A {@link ReadScope} that memoises each key for its own lifetime (one activity call). */
export function onceScope(): ReadScope {
  const memo = new Map<string, Promise<unknown>>();
  return {
    once<T>(key: string, read: () => Promise<T>): Promise<T> {
      let value = memo.get(key) as Promise<T> | undefined;
      if (!value) {
        value = read();
        memo.set(key, value);
      }
      return value;
    },
  };
}

/** Resolves a table intent: `replace` gives the table, `patch` applies to what was read, `keep` keeps it. */
export function resolveTable<T, D, P>(observed: T, intent: { mode: 'keep' } | { mode: 'replace'; desired: D } | { mode: 'patch'; patch: P }, patch: (observed: T, part: P) => D): T | D {
  if (intent.mode === 'replace') return intent.desired;
  if (intent.mode === 'patch') return patch(observed, intent.patch);
  return observed;
}
