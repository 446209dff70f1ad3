/**
 * The left sidebar panel (DOM id `labkit-clusters`): start local clusters, register remote
 * ones, and act on each through its card; a Runs section lists frozen runs and batches.
 * State comes from the server only; the panel polls it while visible.
 */
import { Widget } from '@lumino/widgets';

import { api, ICluster, IRun } from './api';
import { ICardActions, renderCard } from './clusters';
import { h } from './dom';
import { renderRuns } from './runs';

export const PANEL_ID = 'labkit-clusters';
const POLL_VISIBLE_MS = 2000;
const POLL_HIDDEN_MS = 15000;
const RUNS_EVERY = 5; // refresh runs on every fifth cluster poll

export interface IPanelOptions {
  openDashboard(cluster: ICluster): void;
  insertConnect(cluster: ICluster): void;
}

export class ClusterPanel extends Widget {
  constructor(private options: IPanelOptions) {
    super();
    this.id = PANEL_ID;
    this.addClass('labkit-panel');
    this.title.caption = 'labkit clusters';
    this.node.append(this.build());
    void this.refresh(true);
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }

  /** Fetch clusters (and now and then runs), then render; errors go to the banner. */
  async refresh(withRuns = false): Promise<void> {
    window.clearTimeout(this.timer);
    try {
      this.clusters = await api.listClusters();
      this.loaded = true;
      this.connectionError = null;
    } catch (error) {
      this.connectionError = `cannot list clusters: ${(error as Error).message}`;
    }
    if (withRuns || this.polls % RUNS_EVERY === 0) {
      try {
        this.runs = await api.listRuns();
        this.runsError = null;
      } catch (error) {
        this.runsError = (error as Error).message;
      }
    }
    this.polls += 1;
    this.render();
    if (!this.isDisposed) {
      const delay = this.isVisible ? POLL_VISIBLE_MS : POLL_HIDDEN_MS;
      this.timer = window.setTimeout(() => void this.refresh(), delay);
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private build(): HTMLElement {
    this.workersInput = h('input', {
      type: 'number',
      min: '1',
      value: '2',
      className: 'labkit-input labkit-workers-input',
      'aria-label': 'workers for a new local cluster',
      title: 'Dask: worker processes. Ray: CPU slots of its single local node'
    });
    const start = h(
      'section',
      { className: 'labkit-section labkit-start' },
      h('h3', { className: 'labkit-section-title' }, 'New local cluster'),
      h(
        'div',
        { className: 'labkit-row' },
        h('label', { className: 'labkit-label' }, 'Workers'),
        this.workersInput
      ),
      h(
        'div',
        { className: 'labkit-row' },
        h(
          'button',
          {
            className: 'labkit-button labkit-mod-accept labkit-start-ray',
            onclick: () => void this.start('ray')
          },
          'Start Ray'
        ),
        h(
          'button',
          {
            className: 'labkit-button labkit-mod-accept labkit-start-dask',
            onclick: () => void this.start('dask')
          },
          'Start Dask'
        )
      )
    );
    this.addressInput = h('input', {
      type: 'text',
      className: 'labkit-input labkit-address-input',
      placeholder: 'tcp://host:8786 · ray://host:10001 · host:6379',
      'aria-label': 'remote cluster address'
    });
    this.nameInput = h('input', {
      type: 'text',
      className: 'labkit-input labkit-name-input',
      placeholder: 'name (optional)',
      'aria-label': 'name for the remote cluster'
    });
    this.backendSelect = h(
      'select',
      { className: 'labkit-input labkit-backend-select', 'aria-label': 'backend' },
      h('option', { value: '' }, 'auto'),
      h('option', { value: 'ray' }, 'ray'),
      h('option', { value: 'dask' }, 'dask')
    );
    const register = h(
      'form',
      {
        className: 'labkit-section labkit-register',
        onsubmit: (event: Event) => {
          event.preventDefault();
          void this.register();
        }
      },
      h('h3', { className: 'labkit-section-title' }, 'Remote cluster'),
      this.addressInput,
      h(
        'div',
        { className: 'labkit-row' },
        this.nameInput,
        this.backendSelect,
        h('button', { type: 'submit', className: 'labkit-button labkit-register-button' }, 'Add')
      )
    );
    this.banner = h('div', { className: 'labkit-banner', role: 'alert' });
    this.list = h('div', { className: 'labkit-cards' });
    this.runsNode = h('div', { className: 'labkit-runs' });
    return h(
      'div',
      { className: 'labkit-panel-body' },
      h(
        'header',
        { className: 'labkit-header' },
        h(
          'span',
          { className: 'labkit-title' },
          h('span', { className: 'labkit-brand' }, 'labkit'),
          ' clusters'
        ),
        h(
          'button',
          {
            className: 'labkit-icon-button labkit-refresh',
            title: 'refresh now',
            'aria-label': 'refresh',
            onclick: () => void this.refresh(true)
          },
          '⟳'
        )
      ),
      this.banner,
      start,
      h('section', { className: 'labkit-section' }, this.list),
      register,
      h(
        'section',
        { className: 'labkit-section' },
        h('h3', { className: 'labkit-section-title' }, 'Runs'),
        this.runsNode
      )
    );
  }

  private render(): void {
    const message = this.actionError ?? this.connectionError;
    this.banner.replaceChildren();
    if (message) {
      this.banner.append(
        h('span', { className: 'labkit-banner-text' }, message),
        h(
          'button',
          {
            className: 'labkit-icon-button',
            title: 'dismiss',
            'aria-label': 'dismiss',
            onclick: () => {
              this.actionError = null;
              this.render();
            }
          },
          '×'
        )
      );
    }
    this.banner.classList.toggle('labkit-banner-visible', Boolean(message));
    const actions: ICardActions = {
      openDashboard: cluster => this.guard(() => this.options.openDashboard(cluster)),
      insertConnect: cluster => this.guard(() => this.options.insertConnect(cluster)),
      scale: (cluster, workers) =>
        void this.act(cluster.id, () => api.scaleCluster(cluster.id, workers)),
      remove: cluster => void this.act(cluster.id, () => api.removeCluster(cluster.id))
    };
    if (!this.loaded) {
      this.list.replaceChildren(h('div', { className: 'labkit-empty' }, 'Loading clusters…'));
    } else if (this.clusters.length === 0) {
      this.list.replaceChildren(
        h(
          'div',
          { className: 'labkit-empty' },
          'No clusters yet. Start a local one above, or add a remote address below.'
        )
      );
    } else {
      this.list.replaceChildren(
        ...this.clusters.map(cluster =>
          renderCard(cluster, actions, this.pending.has(cluster.id))
        )
      );
    }
    this.runsNode.replaceChildren(renderRuns(this.runs, this.runsError));
  }

  private guard(fn: () => void): void {
    try {
      fn();
      this.actionError = null;
    } catch (error) {
      this.actionError = (error as Error).message;
    }
    this.render();
  }

  private async act(key: string, fn: () => Promise<unknown>): Promise<void> {
    this.pending.add(key);
    this.actionError = null;
    this.render();
    try {
      await fn();
    } catch (error) {
      this.actionError = (error as Error).message;
    } finally {
      this.pending.delete(key);
    }
    await this.refresh();
  }

  private async start(backend: string): Promise<void> {
    const workers = Number(this.workersInput.value);
    const buttons = this.node.querySelectorAll<HTMLButtonElement>('.labkit-start button');
    buttons.forEach(button => (button.disabled = true));
    try {
      await this.act(`start-${backend}`, () => api.startCluster(backend, workers));
    } finally {
      buttons.forEach(button => (button.disabled = false));
    }
  }

  private async register(): Promise<void> {
    const address = this.addressInput.value.trim();
    if (!address) {
      this.actionError = 'enter the address of a running cluster';
      this.render();
      return;
    }
    const name = this.nameInput.value.trim() || undefined;
    const backend = this.backendSelect.value || undefined;
    await this.act(`register-${address}`, async () => {
      await api.registerCluster(address, name, backend);
      this.addressInput.value = '';
      this.nameInput.value = '';
    });
  }

  private clusters: ICluster[] = [];
  private runs: IRun[] = [];
  private loaded = false;
  private polls = 0;
  private timer = 0;
  private pending = new Set<string>();
  private connectionError: string | null = null;
  private actionError: string | null = null;
  private runsError: string | null = null;
  private banner!: HTMLElement;
  private list!: HTMLElement;
  private runsNode!: HTMLElement;
  private workersInput!: HTMLInputElement;
  private addressInput!: HTMLInputElement;
  private nameInput!: HTMLInputElement;
  private backendSelect!: HTMLSelectElement;
}
