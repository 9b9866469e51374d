/** fos1's routes (every table, tagged with fos1's protocol) as a subsystem. */
import { patchRoutes, planRoutes } from '../../model/plan';
import type { RouteTable } from '../system/route-table';
import { resolveTable, tableSubsystem } from './table';

export function createRoutesSubsystem(routes: RouteTable) {
  return tableSubsystem({
    name: 'routes',
    read: () => routes.read(),
    resolve: (observed, intent) => resolveTable(observed, intent, patchRoutes),
    plan: planRoutes,
    sync: (desired) => routes.sync(desired),
    describe: (observed) => `${observed.length} routes`,
  });
}
