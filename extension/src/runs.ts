/** The Runs section: frozen bundles and batches, as `GET /labkit/api/runs` lists them. */
import { IRun } from './api';
import { h } from './dom';

export function renderRuns(runs: IRun[], error: string | null): HTMLElement {
  if (error) {
    return h('div', { className: 'labkit-card-error' }, `cannot list runs: ${error}`);
  }
  if (runs.length === 0) {
    return h(
      'div',
      { className: 'labkit-empty' },
      'No frozen runs yet: ',
      h('code', {}, '%labkit freeze'),
      ' makes one.'
    );
  }
  return h(
    'ul',
    { className: 'labkit-run-list' },
    ...runs.map(run => {
      const title = String(run.name ?? run.path ?? 'run');
      const status = String(run.status ?? '');
      return h(
        'li',
        { className: 'labkit-run', title: String(run.path ?? title) },
        h('span', { className: 'labkit-run-name' }, title),
        run.kind ? h('span', { className: 'labkit-run-kind' }, String(run.kind)) : null,
        status
          ? h('span', { className: `labkit-run-status labkit-run-status-${status}` }, status)
          : null,
        run.created ? h('span', { className: 'labkit-run-created' }, String(run.created)) : null
      );
    })
  );
}
