/**
 * The controllers' list-then-watch with a scripted fake apiserver: it watches from the list's
 * resourceVersion, resumes from the newest one seen when a watch ends cleanly, relists on
 * 410 Gone, and reports objects deleted while it was not watching.
 */
import pino from 'pino';
import { ListWatch, type ListWatchClient } from '../../controllers/list-watch';
import { KubeApiError, type StoredObject, type WatchEvent } from '../../k8s/client';

const obj = (name: string, rv: string): StoredObject => ({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', metadata: { name, namespace: 'ns', resourceVersion: rv } });

/** Each list returns the next scripted item set; each watch hands its callbacks to the test. */
class ScriptedApi implements ListWatchClient {
  lists: StoredObject[][] = [];
  listRv: string[] = [];
  watches: { rv: string; onEvent: (e: WatchEvent) => void; onDone: (err: unknown) => void }[] = [];
  async list() {
    return { items: this.lists.shift() ?? [], resourceVersion: this.listRv.shift() ?? '0' };
  }
  async watch(_path: string, rv: string, onEvent: (e: WatchEvent) => void, onDone: (err: unknown) => void) {
    this.watches.push({ rv, onEvent, onDone });
    return () => undefined;
  }
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
};

describe('ListWatch', () => {
  it('lists, watches from the list resourceVersion, resumes from the newest seen, and relists on 410 Gone', async () => {
    const api = new ScriptedApi();
    api.lists = [[obj('a', '10')], [obj('b', '40')]];
    api.listRv = ['12', '41'];
    const seen: string[] = [];
    const lw = new ListWatch({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      path: '/apis/security.fos1.io/v1alpha1/firewallrules',
      client: api,
      logger: pino({ level: 'silent' }),
      handler: { upsert: (o) => seen.push(`upsert ${o.metadata.name}`), deleted: (o) => seen.push(`deleted ${o.metadata.name}`) },
    });
    await lw.start();
    expect(api.watches.map((w) => w.rv)).toEqual(['12']);
    const first = api.watches[0]!;
    first.onEvent({ type: 'MODIFIED', object: obj('a', '20') });
    first.onEvent({ type: 'BOOKMARK', object: obj('', '25') });
    first.onDone(null); // the server's watch timeout: resume, do not relist
    await until(() => api.watches.length === 2);
    expect(api.watches[1]!.rv).toBe('25');
    expect(lw.lists).toBe(1);

    api.watches[1]!.onEvent({ type: 'ERROR', object: { code: 410, message: 'too old resource version' } as unknown as StoredObject });
    api.watches[1]!.onDone(null);
    await until(() => api.watches.length === 3);
    expect(lw.lists).toBe(2);
    expect(api.watches[2]!.rv).toBe('41');
    // "a" vanished between the watches: the relist reports it deleted.
    expect(seen).toEqual(['upsert a', 'upsert a', 'upsert b', 'deleted a']);
    lw.stop();
  });

  it('keeps retrying the first list while the apiserver answers 429 (a new kind\'s storage initialising), but not on a 403', async () => {
    const make = (api: ListWatchClient) =>
      new ListWatch({ apiVersion: 'v1', kind: 'X', path: '/x', client: api, logger: pino({ level: 'silent' }), retryDelayMs: 1, handler: { upsert: () => undefined, deleted: () => undefined } });
    const flaky = new ScriptedApi();
    let failures = 2;
    const list = flaky.list.bind(flaky);
    flaky.list = async () => {
      if (failures-- > 0) throw new KubeApiError(429, 'TooManyRequests', 'list X: 429 TooManyRequests: storage is (re)initializing');
      return list();
    };
    const lw = make(flaky);
    await lw.start();
    expect(lw.lists).toBe(1);
    expect(flaky.watches).toHaveLength(1);
    lw.stop();

    const forbidden = new ScriptedApi();
    forbidden.list = async () => {
      throw new KubeApiError(403, 'Forbidden', 'list X: 403 Forbidden: no');
    };
    await expect(make(forbidden).start()).rejects.toThrow('403 Forbidden');
  });
});

