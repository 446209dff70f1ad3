/** One card per cluster: identity, live figures, and what can be done with it. */
import { ICluster } from './api';
import { formatBytes, formatCount, h } from './dom';

/** What a card's buttons do; the panel supplies them. */
export interface ICardActions {
  openDashboard(cluster: ICluster): void;
  insertConnect(cluster: ICluster): void;
  scale(cluster: ICluster, workers: number): void;
  remove(cluster: ICluster): void;
}

const BACKEND_LABEL: Record<string, string> = { ray: 'Ray', dask: 'Dask' };

const ORIGIN_LABEL: Record<string, string> = {
  managed: 'local',
  registered: 'remote',
  kernel: 'kernel'
};

function stat(label: string, value: string): HTMLElement {
  return h(
    'div',
    { className: 'labkit-stat' },
    h('span', { className: 'labkit-stat-value' }, value),
    h('span', { className: 'labkit-stat-label' }, label)
  );
}

function header(cluster: ICluster): HTMLElement {
  return h(
    'div',
    { className: 'labkit-card-header' },
    h('span', { className: 'labkit-card-name', title: cluster.name }, cluster.name),
    h(
      'span',
      { className: `labkit-status labkit-status-${cluster.status}`, title: cluster.status },
      h('span', { className: 'labkit-status-dot' }),
      cluster.status
    )
  );
}

function meta(cluster: ICluster): HTMLElement {
  return h(
    'div',
    { className: 'labkit-meta' },
    h(
      'span',
      { className: `labkit-backend labkit-backend-${cluster.backend}` },
      BACKEND_LABEL[cluster.backend] ?? cluster.backend
    ),
    h('span', { className: 'labkit-origin' }, ORIGIN_LABEL[cluster.origin] ?? cluster.origin),
    h('code', { className: 'labkit-address', title: cluster.address }, cluster.address || '…')
  );
}

function stats(cluster: ICluster): HTMLElement {
  return h(
    'div',
    { className: 'labkit-stats' },
    stat(cluster.backend === 'ray' ? 'nodes' : 'workers', formatCount(cluster.workers)),
    stat('CPUs', formatCount(cluster.cpus)),
    stat('GPUs', formatCount(cluster.gpus)),
    stat('memory', formatBytes(cluster.memory_bytes))
  );
}

function scaleRow(cluster: ICluster, actions: ICardActions, busy: boolean): HTMLElement {
  const input = h('input', {
    type: 'number',
    min: '1',
    value: String(cluster.requested_workers ?? cluster.workers ?? 1),
    className: 'labkit-input labkit-scale-input',
    title:
      cluster.backend === 'ray'
        ? 'A local Ray cluster is one node: scaling restarts it with this many CPU slots'
        : 'Number of Dask worker processes',
    'aria-label': `workers for ${cluster.name}`
  });
  return h(
    'div',
    { className: 'labkit-scale' },
    h('label', {}, cluster.backend === 'ray' ? 'CPU slots' : 'Workers'),
    input,
    h(
      'button',
      {
        className: 'labkit-button labkit-scale-button',
        disabled: busy || cluster.status === 'stopping',
        onclick: () => actions.scale(cluster, Number(input.value))
      },
      'Scale'
    )
  );
}

function buttons(cluster: ICluster, actions: ICardActions, busy: boolean): HTMLElement {
  const dashboard = cluster.dashboard_url;
  return h(
    'div',
    { className: 'labkit-actions' },
    h(
      'button',
      {
        className: 'labkit-button labkit-mod-primary labkit-insert',
        disabled: busy,
        title: `insert "${cluster.connect}" into the active notebook`,
        onclick: () => actions.insertConnect(cluster)
      },
      'Insert connect cell'
    ),
    h(
      'button',
      {
        className: 'labkit-button labkit-open-dashboard',
        disabled: !dashboard || busy,
        title: dashboard ? 'open the dashboard in a JupyterLab tab' : 'no dashboard',
        onclick: () => actions.openDashboard(cluster)
      },
      'Dashboard'
    ),
    dashboard
      ? h(
          'a',
          {
            className: 'labkit-button labkit-dashboard-link',
            href: dashboard,
            target: '_blank',
            rel: 'noopener',
            title: 'open the dashboard in a new browser tab',
            'aria-label': `${cluster.name} dashboard in a new browser tab`
          },
          '↗'
        )
      : null,
    cluster.origin === 'kernel'
      ? null
      : h(
          'button',
          {
            className: 'labkit-button labkit-mod-danger labkit-stop',
            disabled: busy || cluster.status === 'stopping',
            title: cluster.managed
              ? 'stop this cluster and all its processes'
              : 'forget this address (the cluster keeps running)',
            onclick: () => actions.remove(cluster)
          },
          cluster.managed ? 'Stop' : 'Forget'
        )
  );
}

export function renderCard(
  cluster: ICluster,
  actions: ICardActions,
  busy: boolean
): HTMLElement {
  return h(
    'div',
    {
      className: `labkit-card labkit-card-${cluster.status}`,
      dataset: { clusterId: cluster.id, status: cluster.status }
    },
    header(cluster),
    meta(cluster),
    stats(cluster),
    cluster.error
      ? h('div', { className: 'labkit-card-error', role: 'alert' }, cluster.error)
      : null,
    cluster.managed ? scaleRow(cluster, actions, busy) : null,
    buttons(cluster, actions, busy)
  );
}
