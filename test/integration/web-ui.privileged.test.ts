/**
 * The README's Web UI path in a real browser: Debian's Chromium driven by playwright-core
 * against the Web UI the Temporal dev server embeds (CLI v1.5.1, UI 2.42). Starts the README's
 * first change (plus a confirmation time-out, so it waits) from *Start Workflow*, finds it with
 * the list filter `Fos1Author = "admin"`, sends the `confirm` update from the workflow's page,
 * and checks the node by read-back (`ip -n <ns> route`). Screenshots of every step are kept in
 * `test-artifacts/web-ui/` (gitignored).
 *
 * Real parts: the Temporal dev server with its UI, the fos1 workers, a network namespace standing
 * in for `router-1` with the README's addresses (10.200.0.2/24, fd00:200::2/64).
 *
 * Privileged: needs root, netns, bpffs, the built Temporal CLI and Chromium.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { createSandboxNamespace } from '../../scripts/sandbox-netns';
import { changeWorkflow } from '../../workflows/change';
import { launchBrowser, type TestBrowser } from '../helpers/browser';
import { describePrivileged } from '../helpers/capabilities';
import { waitForPhase } from '../helpers/change-client';
import { freePort } from '../helpers/prometheus';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

/** The first ```json block under "## Your first change" in the README: the change the UI starts. */
function readmeFirstChange(): { id: string; author: string; targets: string[]; [key: string]: unknown } {
  const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Your first change'));
  const block = /```json\n([\s\S]*?)\n```/.exec(section);
  if (!block?.[1]) throw new Error('README.md: no ```json block under "## Your first change"');
  return JSON.parse(block[1]) as ReturnType<typeof readmeFirstChange>;
}

/** The confirmation time-out the README tells UI users to add, so the change waits for `confirm`. */
const CONFIRM_OPTIONS = { confirmTimeout: '5m' };
/** The `confirm` update's input, as the README gives it. */
const CONFIRMATION = { by: 'alice' };

describePrivileged('the Web UI path in a real browser (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli', 'chromium'], () => {
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let browser: TestBrowser;
  let uiUrl: string;
  const nsName = `fos1ui-${randomBytes(3).toString('hex')}`;
  const pinDir = `/sys/fs/bpf/fos1-test-ui-${randomBytes(4).toString('hex')}`;
  const change = readmeFirstChange();
  const node = change.targets[0] as string;

  beforeAll(async () => {
    const uiPort = await freePort();
    uiUrl = `http://127.0.0.1:${uiPort}`;
    env = await startTemporal({ uiPort });
    // The README's sandbox: lan0 with 10.200.0.2/24 and fd00:200::2/64, so its gateways are on-link.
    createSandboxNamespace(nsName, ['10.200.0.2/24', 'fd00:200::2/64']);
    workers = await startWorkers(env, node, { netns: nsName, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });
    browser = await launchBrowser('web-ui');
  });

  afterAll(async () => {
    await browser?.close();
    await workers?.stop();
    removePinnedBlocklist(pinDir);
    try {
      execFileSync('ip', ['netns', 'del', nsName]);
    } catch {
      // never created
    }
    await env?.teardown();
  });

  afterEach(async () => {
    // Whatever the outcome, the page as it was at the end is kept beside the step screenshots.
    await browser?.screenshot('end-of-test').catch(() => undefined);
  });

  const routes = (family: 4 | 6) => execFileSync('ip', ['-n', nsName, `-${family}`, 'route', 'show', 'table', 'all', 'proto', String(DEFAULT_ROUTE_PROTOCOL)]).toString();

  test('Start Workflow with the README JSON, find it by Fos1Author, confirm it with the confirm update, and the node has the routes', async () => {
    const { page } = browser;
    page.setDefaultTimeout(30_000);
    const workflowId = changeWorkflowId(change.id);
    const input = JSON.stringify({ ...change, options: CONFIRM_OPTIONS }, null, 2);
    // Someone else's change (a dry run, finished before the UI starts): the author filter must hide it.
    const otherId = `other-author-${randomBytes(2).toString('hex')}`;
    const other = await env.client.workflow.execute(changeWorkflow, {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: changeWorkflowId(otherId),
      args: [{ id: otherId, author: 'someone-else', reason: 'not in the filtered list', targets: [node], patch: { routes: { upsert: [{ destination: '10.51.0.0/16', gateway: '10.200.0.1' }] } }, options: { dryRun: true } }],
    });
    expect(other.phase).toBe('planned');
    expect(routes(4)).not.toContain('10.50.0.0/16');

    // 1. Start Workflow, from the workflow list.
    await page.goto(`${uiUrl}/namespaces/default/workflows`);
    await page.getByRole('button', { name: 'Start Workflow' }).or(page.getByRole('link', { name: 'Start Workflow' })).first().click();
    await page.getByLabel('Workflow ID').fill(workflowId);
    await page.getByLabel('Task Queue').fill(CLUSTER_TASK_QUEUE);
    await page.getByLabel('Workflow Type').fill('changeWorkflow');
    // The Input's Data field is a code editor (a contenteditable textbox), not an <input>.
    await page.locator('[contenteditable="true"][role="textbox"]').fill(input);
    await browser.screenshot('start-workflow-form');
    await page.getByRole('button', { name: 'Start Workflow' }).click();
    await page.getByText('Workflow started successfully').waitFor();
    await browser.screenshot('started');

    // The change applies, verifies, and waits for the confirmation: the node has the routes already.
    const handle = env.client.workflow.getHandle<typeof changeWorkflow>(workflowId);
    const waiting = await waitForPhase(handle, 'awaiting-confirmation');
    expect(waiting.nodes[node]?.outcome).toBe('applied');
    expect(routes(4)).toContain('10.50.0.0/16 via 10.200.0.1 dev lan0 table 100');

    // 2. The list, filtered by the author's search attribute: this change only, not someone-else's.
    await page.goto(`${uiUrl}/namespaces/default/workflows`);
    await page.getByRole('link', { name: changeWorkflowId(otherId) }).first().waitFor();
    await page.getByTestId('toggle-manual-query').click();
    await page.getByPlaceholder('Enter a query').fill(`Fos1Author = "${change.author}"`);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('link', { name: changeWorkflowId(otherId) }).first().waitFor({ state: 'detached' });
    await page.getByRole('link', { name: workflowId }).first().waitFor();
    await browser.screenshot('list-filtered-by-author');

    // 3. Open it; More Actions → Send an Update → Name `confirm`, Data {"by":"alice"} → Submit.
    await page.getByRole('link', { name: workflowId }).first().click();
    await page.getByRole('heading', { name: workflowId }).waitFor();
    await page.getByRole('button', { name: 'More Actions' }).click();
    await page.getByRole('menuitem', { name: 'Send an Update' }).click();
    const dialog = page.getByRole('dialog', { name: 'Send an Update' });
    await dialog.getByTestId('update-select-button').click();
    await dialog.getByRole('option', { name: 'confirm' }).click();
    await dialog.locator('[contenteditable="true"][role="textbox"]').fill(JSON.stringify(CONFIRMATION));
    await browser.screenshot('send-update-confirm');
    await dialog.getByRole('button', { name: 'Submit' }).click();

    // 4. The change completes as confirmed; the UI shows it Completed; the node keeps the routes.
    const status = await handle.result();
    expect(status.phase).toBe('applied');
    expect(status.audit).toEqual(expect.arrayContaining([expect.objectContaining({ step: 'confirm', result: 'ok', detail: `confirmed by ${CONFIRMATION.by}` })]));
    await page.reload();
    await page.getByText('Completed').first().waitFor();
    await browser.screenshot('completed');
    expect(routes(4)).toContain('10.50.0.0/16 via 10.200.0.1 dev lan0 table 100');
    expect(routes(6)).toContain('2001:db8:50::/48 via fd00:200::1 dev lan0');
  });
});
