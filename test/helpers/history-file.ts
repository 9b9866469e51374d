/**
 * The form replay histories are committed in (test/replay/histories/*.json): the history
 * proto as a plain JSON object (enums by name, 64-bit integers and bytes as strings), made
 * and read with the generated proto classes.
 *
 * Not the SDK's `historyToJSON` / `historyFromJSON`: with the npm tree this lock file
 * gives, @temporalio/common and @temporalio/proto each get their own copy of protobufjs 8,
 * and those helpers then fail with "type must be a Type" (an `instanceof` across the two
 * copies). The generated classes carry their own encoder and need no reflection.
 */
import { temporal } from '@temporalio/proto';

type History = temporal.api.history.v1.History;
const { History } = temporal.api.history.v1;

/** A fetched history as a JSON-safe object. */
export function historyToObject(history: temporal.api.history.v1.IHistory): Record<string, unknown> {
  return History.toObject(History.fromObject(history), { longs: String, enums: String, bytes: String }) as Record<string, unknown>;
}

/** The history a {@link historyToObject} object describes. */
export function historyFromObject(object: unknown): History {
  if (typeof object !== 'object' || object === null || !Array.isArray((object as { events?: unknown }).events)) {
    throw new Error('a recorded history must be an object with an "events" array');
  }
  return History.fromObject(object as Record<string, unknown>);
}
