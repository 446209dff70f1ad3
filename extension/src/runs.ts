/** The Runs section: frozen bundles, runs and batches, as `GET /labkit/api/runs` lists them. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IRun } from './api';
import { h } from './dom';

/** A run's MLflow page as a link target: a server's page as it is, a local one under Jupyter. */
export function mlflowHref(page: string): string {
  if (/^https?:\/\//.test(page)) {
    return page;
  }
  return URLExt.join(ServerConnection.makeSettings().baseUrl, page);
}

function mlflowLink(run: IRun): HTMLElement | null {
  const page = 'mlflow_page' in run ? run.mlflow_page : null;
  if (!page) {
    return null;
  }
  return h(
    'a',
    {
      className: 'labkit-run-mlflow',
      href: mlflowHref(page),
      target: '_blank',
      rel: 'noopener',
      title: 'this run in MLflow'
    },
    'MLflow'
  );
}

function when(created: unknown): string {
  if (typeof created !== 'string' || !created) {
    return '';
  }
  const date = new Date(created);
  if (Number.isNaN(date.getTime())) {
    return created;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

function renderRun(run: IRun): HTMLElement {
  const name = String(run.name ?? run.path ?? 'run');
  const status = String(run.status ?? '');
  const kind = String(run.kind ?? '');
  return h(
    'li',
    {
      className: 'labkit-run',
      title: String(run.path ?? name),
      dataset: { kind, status }
    },
    h(
      'div',
      { className: 'labkit-run-line' },
      kind ? h('span', { className: `labkit-run-kind labkit-run-kind-${kind}` }, kind) : null,
      h('span', { className: 'labkit-run-name' }, name),
      status
        ? h('span', { className: `labkit-run-status labkit-run-status-${status}` }, status)
        : null,
      mlflowLink(run)
    ),
    h(
      'div',
      { className: 'labkit-run-line labkit-run-details' },
      h('code', { className: 'labkit-run-path' }, String(run.path ?? '')),
      h('span', { className: 'labkit-run-created' }, when(run.created))
    )
  );
}

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
  return h('ul', { className: 'labkit-run-list' }, ...runs.map(renderRun));
}
