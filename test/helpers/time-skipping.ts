/**
 * Temporal's time-skipping test server (the Java one from Maven Central, installed by
 * scripts/bootstrap.d/70-temporal-test-server.sh) for the fast workflow tests: timers of
 * minutes or days fire as soon as every workflow is waiting, so the coordinator's caps, an
 * enforcement's expiry and a change's confirm timeout are tested in seconds, without root.
 *
 * The SDK's own `createTimeSkipping()` downloads a binary from the internet; here it starts
 * the installed wrapper as an `existing-path` server instead (it passes the port as the
 * wrapper's first argument, and kills the process on teardown).
 */
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { workflowBundle } from './workflow-bundle';
import { SEARCH_ATTRIBUTE_DEFINITIONS } from '../../model/naming';
import { temporalTestServerPath } from '../../scripts/paths';

/** Null when the time-skipping server can run here, else why it cannot. */
export function timeSkippingServerMissing(): string | null {
  if (!existsSync(temporalTestServerPath())) return `Temporal test server not installed at ${temporalTestServerPath()} (scripts/bootstrap.sh fetches it with Maven)`;
  try {
    execFileSync('java', ['-version'], { stdio: 'ignore' });
  } catch {
    return 'java is not on PATH (the Temporal test server is a Java program; scripts/bootstrap.sh installs openjdk-17-jre-headless)';
  }
  return null;
}

/**
 * `describe` for suites that need the time-skipping server. Without it the suite is
 * skipped with the reason; under `CI=true` that is a failure (CI has run bootstrap, so an
 * absence there is a broken install step).
 */
export function describeTimeSkipping(name: string, body: () => void): void {
  const why = timeSkippingServerMissing();
  if (why === null) {
    describe(name, body);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('has the time-skipping test server', () => {
        throw new Error(`CI=true and the time-skipping test server is missing — ${why}`);
      });
    });
    return;
  }
  console.warn(`SKIPPED "${name}" — ${why}`);
  const skipped = describe.skip;
  skipped(name, body);
}

/** temporal.api.enums.v1.IndexedValueType (the proto package is not a direct dependency). */
const INDEXED_VALUE_TYPE = { Keyword: 2, KeywordList: 7 } as const;

let runtimeInstalled = false;

/** Starts the time-skipping test server on a free port, with fos1's search attributes registered. */
export async function startTimeSkipping(): Promise<TestWorkflowEnvironment> {
  if (!runtimeInstalled) {
    // Workflows that fail on purpose (a rolled-back change) are logged by the SDK as
    // warnings; keep test output to real errors unless FOS1_TEST_LOG asks for more.
    Runtime.install({ logger: new DefaultLogger(process.env.FOS1_TEST_LOG ? 'INFO' : 'ERROR') });
    runtimeInstalled = true;
  }
  const env = await createTimeSkippingWithRetry();
  try {
    // The change and node workflows upsert these; the test server knows none until told
    // (unlike the dev server, it takes no --search-attribute flag).
    const searchAttributes = Object.fromEntries(
      Object.entries(SEARCH_ATTRIBUTE_DEFINITIONS).map(([name, type]) => [name, INDEXED_VALUE_TYPE[type]]),
    );
    await env.connection.operatorService.addSearchAttributes({ namespace: env.namespace ?? 'default', searchAttributes });
  } catch (err) {
    await env.teardown();
    throw err;
  }
  return env;
}

/** Re-exported for the tests that take it from here. */
export { workflowBundle };

/**
 * The SDK gives the server 5 s to accept connections, and a JVM starting on a loaded 2-core
 * machine can take longer (seen in a full run at load 20). Only that start-up refusal is
 * retried; any other error is the test's to report.
 */
async function createTimeSkippingWithRetry(attempts = 4): Promise<TestWorkflowEnvironment> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: temporalTestServerPath() } } });
    } catch (err) {
      if (attempt >= attempts || !/did not start within/.test(String((err as Error).message))) throw err;
      console.warn(`time-skipping server did not start in time (attempt ${attempt} of ${attempts}); starting it again`);
    }
  }
}
