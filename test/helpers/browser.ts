/**
 * Debian's Chromium (scripts/bootstrap.d/75-chromium.sh) driven by playwright-core, for the Web
 * UI test. Playwright's own browser download needs the internet, so the system binary is
 * launched headless with a fresh profile and everything that would phone home switched off.
 * Screenshots go to `test-artifacts/<suite>/` at the repository root (gitignored), numbered in
 * the order they were taken, so a failed run leaves the pages it saw behind.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { CHROMIUM_PATH } from '../../scripts/paths';


/** Flags for a headless run in a sandbox without a GPU or the internet. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A running browser with one page; `screenshot(name)` keeps an artifact, `close()` ends it all. */
export interface TestBrowser {
  page: Page;
  /** Folder the screenshots are written to. */
  artifactDir: string;
  /** Saves a full-page screenshot as `NN-name.png`; returns its path. */
  screenshot(name: string): Promise<string>;
  close(): Promise<void>;
}

/** Folder for one suite's artifacts under `<repo>/test-artifacts/`, emptied first. */
export function artifactDir(suite: string): string {
  const dir = resolve(__dirname, '..', '..', 'test-artifacts', suite);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Launches Chromium with a fresh user-data dir (removed on close). */
export async function launchBrowser(suite: string): Promise<TestBrowser> {
  const profile = mkdtempSync(join(tmpdir(), 'fos1-chromium-'));
  let context: BrowserContext;
  try {
    // A persistent context is how Playwright takes a user-data dir of our choosing.
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 1000 } });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  const dir = artifactDir(suite);
  let taken = 0;
  return {
    page,
    artifactDir: dir,
    async screenshot(name) {
      const path = join(dir, `${String(++taken).padStart(2, '0')}-${name}.png`);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
