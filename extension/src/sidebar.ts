/**
 * The left sidebar panel (DOM id `labkit-clusters`): start local clusters, register remote
 * ones, and act on each through its card; a Runs section lists frozen runs and batches.
 * State comes from the server only; the panel polls it (faster while visible). Cards are kept
 * by cluster id across polls and updated in place; every action goes through a JupyterLab
 * command (commands.ts), so the buttons do just what the command palette does. A batch or
 * SLURM cluster that ends, or a SLURM job near its walltime, is a notification (notices.ts).
 */
import { Notification } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import { PromiseDelegate } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { api, IBackend, ICluster, IRun } from './api';
import { ClusterCard } from './clusters';
import { CommandIDs } from './commandids';
import { h } from './dom';
import { Conditions, conditions, INotice, news, observeBatches, observeClusters } from './notices';
import { renderRuns } from './runs';
import { Backend, DEFAULT_SETTINGS, ILabkitSettings } from './settings';

export const PANEL_ID = 'labkit-clusters';
const POLL_HIDDEN_MS = 15000;
const RUNS_EVERY = 5; // refresh runs on every fifth cluster poll

export interface IPanelOptions {
  commands: CommandRegistry;
  settings?: ILabkitSettings;
}

export class ClusterPanel extends Widget {
  constructor(options: IPanelOptions) {
    super();
    this.commands = options.commands;
    this.settings = options.settings ?? DEFAULT_SETTINGS;
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

  /** The backends the server starts clusters of, once it has named them. */
  get backends(): Promise<readonly IBackend[]> {
    return this.backendsLoaded.promise;
  }

  /** The backends as the server names them now (asked again if it has not answered yet). */
  async knownBackends(): Promise<readonly IBackend[]> {
    if (this.backendList.length === 0) {
      await this.loadBackends();
    }
    return this.backendList;
  }

  /** How the sidebar names ``backend`` (``on`` SLURM or not): the server's words, or its name. */
  describe(backend: string, on = 'local'): IBackend {
    return (
      this.backendList.find(b => b.name === backend && (b.on ?? 'local') === on) ?? {
        name: backend,
        label: backend,
        worker_unit: 'workers',
        scale_label: 'Workers',
        scale_hint: 'Number of workers'
      }
    );
  }

  /** The clusters as the last poll saw them. */
  get clusters(): readonly ICluster[] {
    return this.clusterList;
  }

  /** The message of the last failed action, if the banner still shows it. */
  get lastError(): string | null {
    return this.actionError;
  }

  /** What the Workers field of "New local cluster" holds now. */
  get newClusterWorkers(): number {
    return Number(this.workersInput.value);
  }

  /** New settings: the next poll uses the new interval; an untouched Workers field follows. */
  updateSettings(settings: ILabkitSettings): void {
    const previous = this.settings;
    this.settings = settings;
    if (this.workersInput.value === String(previous.defaultWorkers)) {
      this.workersInput.value = String(settings.defaultWorkers);
    }
    this.renderStartButtons();
    if (settings.pollInterval !== previous.pollInterval) {
      void this.refresh();
    }
  }

  /** Fetch clusters (and now and then runs), then render; errors go to the banner. */
  async refresh(withRuns = false): Promise<void> {
    window.clearTimeout(this.timer);
    if (this.backendList.length === 0) {
      await this.loadBackends();
    }
    try {
      this.clusterList = await api.listClusters();
      this.loaded = true;
      this.connectionError = null;
      const seen = observeClusters(this.clusterList, this.settings.walltimeWarning);
      this.notify(news(this.clusterConditions, seen));
      this.clusterConditions = conditions(seen);
    } catch (error) {
      this.connectionError = `cannot list clusters: ${(error as Error).message}`;
    }
    if (withRuns || this.polls % RUNS_EVERY === 0) {
      try {
        this.runs = await api.listRuns();
        this.runsError = null;
        const seen = observeBatches(this.runs);
        this.notify(news(this.batchConditions, seen));
        this.batchConditions = conditions(seen);
      } catch (error) {
        this.runsError = (error as Error).message;
      }
      this.runsNode.replaceChildren(renderRuns(this.runs, this.runsError));
    }
    this.polls += 1;
    this.node.dataset.polls = String(this.polls);
    this.render();
    if (!this.isDisposed) {
      const visible = this.settings.pollInterval * 1000;
      const delay = this.isVisible ? visible : Math.max(POLL_HIDDEN_MS, visible);
      this.timer = window.setTimeout(() => void this.refresh(), delay);
    }
  }

  /** JupyterLab notifications for what ended; errors stay until dismissed. */
  private notify(notices: INotice[]): void {
    for (const notice of notices) {
      Notification.emit(notice.message, notice.level, {
        autoClose: notice.level === 'error' ? false : 15000,
        actions: [
          {
            label: 'Show',
            caption: 'show the labkit panel',
            callback: () => void this.commands.execute(CommandIDs.showPanel)
          }
        ]
      });
    }
  }

  /** Ask the server which backends it starts (once: a failure is retried on the next poll). */
  private loadBackends(): Promise<void> {
    this.backendsLoading ??= this.fetchBackends().finally(() => (this.backendsLoading = null));
    return this.backendsLoading;
  }

  private async fetchBackends(): Promise<void> {
    let backends: IBackend[];
    try {
      backends = await api.listBackends();
    } catch {
      return;
    }
    this.backendList = backends;
    this.startRow.replaceChildren();
    this.slurmRow.replaceChildren();
    this.startButtons.clear();
    for (const backend of this.backendList) {
      const on = backend.on ?? 'local';
      const key = on === 'local' ? backend.name : `${backend.name}-${on}`;
      const profile =
        on === 'slurm' && backend.profiles?.length
          ? h(
              'select',
              {
                className: `labkit-input labkit-profile-select labkit-profile-${key}`,
                'aria-label': `SLURM profile for ${backend.label}`
              },
              ...backend.profiles.map(name => h('option', { value: name }, name))
            )
          : null;
      const button = h(
        'button',
        {
          className: `labkit-button labkit-start-${key}`,
          onclick: () =>
            void this.commands.execute(CommandIDs.start, {
              backend: backend.name,
              workers: this.newClusterWorkers,
              ...(on === 'local' ? {} : { on }),
              ...(profile ? { profile: profile.value } : {})
            })
        },
        `Start ${backend.label}`
      );
      this.startButtons.set(key, button);
      if (on === 'local') {
        this.startRow.append(button);
        this.backendSelect.append(h('option', { value: backend.name }, backend.name));
      } else {
        // one row per backend: a profile and its button side by side fit the sidebar
        this.slurmRow.append(
          h('div', { className: 'labkit-row labkit-slurm' }, ...(profile ? [profile] : []), button)
        );
      }
    }
    this.slurmRow.hidden = this.slurmRow.childElementCount === 0;
    this.backendsLoaded.resolve(this.backendList);
  }

  /**
   * Run one action against the server: its card (or button) shows busy meanwhile, a failure
   * goes to the banner, and the panel refreshes after. Resolves to whether it succeeded.
   */
  async act(key: string, fn: () => Promise<unknown>): Promise<boolean> {
    this.pending.add(key);
    this.actionError = null;
    this.render();
    let ok = true;
    try {
      await fn();
    } catch (error) {
      this.actionError = (error as Error).message;
      ok = false;
    } finally {
      this.pending.delete(key);
    }
    await this.refresh();
    return ok;
  }

  /** Show a failure in the banner (until dismissed or the next action). */
  report(message: string | null): void {
    this.actionError = message;
    this.renderBanner();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private build(): HTMLElement {
    this.workersInput = h('input', {
      type: 'number',
      min: '1',
      value: String(this.settings.defaultWorkers),
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
      this.startRow,
      this.slurmRow
    );
    this.addressInput = h('input', {
      type: 'text',
      className: 'labkit-input labkit-address-input',
      placeholder: 'tcp:// or tls://host:8786 · ray://host:10001 · host:6379',
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
      h('option', { value: '' }, 'auto')
    );
    const credential = (cls: string, label: string, placeholder: string) =>
      h('input', {
        type: 'text',
        className: `labkit-input ${cls}`,
        placeholder,
        'aria-label': label
      });
    this.tokenInput = credential('labkit-token-input', 'Ray token file', 'Ray token file');
    this.tlsInputs = [
      credential('labkit-tls-ca-input', 'TLS CA file', 'TLS CA file (ca.pem)'),
      credential('labkit-tls-cert-input', 'TLS certificate', 'TLS certificate (client.pem)'),
      credential('labkit-tls-key-input', 'TLS key', 'TLS key (client-key.pem)')
    ];
    const credentials = h(
      'details',
      { className: 'labkit-credentials' },
      h('summary', {}, 'Credentials (paths on the Jupyter server)'),
      this.tokenInput,
      ...this.tlsInputs
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
      credentials,
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
    this.empty = h('div', { className: 'labkit-empty' }, 'Loading clusters…');
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
            onclick: () => void this.commands.execute(CommandIDs.refresh)
          },
          '⟳'
        )
      ),
      this.banner,
      start,
      h('section', { className: 'labkit-section' }, this.empty, this.list),
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
    this.renderBanner();
    this.renderStartButtons();
    this.renderCards();
  }

  private renderBanner(): void {
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
            onclick: () => this.report(null)
          },
          '×'
        )
      );
    }
    this.banner.classList.toggle('labkit-banner-visible', Boolean(message));
  }

  private renderStartButtons(): void {
    for (const [backend, button] of this.startButtons) {
      button.disabled = this.pending.has(`start-${backend}`);
      const isDefault = backend === this.settings.defaultBackend;
      button.classList.toggle('labkit-mod-accept', isDefault);
      button.title = isDefault
        ? `start a local ${backend} cluster (the default backend in the settings)`
        : `start a local ${backend} cluster`;
    }
  }

  /**
   * One card per cluster id: new ids get a card, gone ids lose theirs, the rest are updated
   * in place. Nodes move only when the server's order changed, since moving a node would
   * take the focus away from a field in it.
   */
  private renderCards(): void {
    if (!this.loaded) {
      return;
    }
    const seen = new Set<string>();
    const order: HTMLElement[] = [];
    for (const cluster of this.clusterList) {
      seen.add(cluster.id);
      const busy = this.pending.has(cluster.id);
      let card = this.cards.get(cluster.id);
      if (card) {
        card.update(cluster, busy);
      } else {
        card = new ClusterCard(cluster, this.commands, (name, on) => this.describe(name, on));
        card.update(cluster, busy);
        this.cards.set(cluster.id, card);
      }
      order.push(card.node);
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.node.remove();
        this.cards.delete(id);
      }
    }
    const current = Array.from(this.list.children);
    if (current.length !== order.length || order.some((node, i) => current[i] !== node)) {
      order.forEach((node, i) => {
        if (this.list.children[i] !== node) {
          this.list.insertBefore(node, this.list.children[i] ?? null);
        }
      });
    }
    this.empty.hidden = order.length > 0;
    const emptyText = 'No clusters yet. Start a local one above, or add a remote address below.';
    if (this.empty.textContent !== emptyText) {
      this.empty.textContent = emptyText;
    }
  }

  private async register(): Promise<void> {
    const address = this.addressInput.value.trim();
    if (!address) {
      this.report('enter the address of a running cluster');
      return;
    }
    const name = this.nameInput.value.trim() || undefined;
    const backend = this.backendSelect.value || undefined;
    const tokenFile = this.tokenInput.value.trim() || undefined;
    const [ca, cert, key] = this.tlsInputs.map(input => input.value.trim());
    const tls = ca || cert ? { ca_file: ca, cert, ...(key ? { key } : {}) } : undefined;
    await this.act(`register-${address}`, async () => {
      await api.registerCluster(address, { name, backend, tokenFile, tls });
      for (const input of [this.addressInput, this.nameInput, this.tokenInput, ...this.tlsInputs]) {
        input.value = '';
      }
    });
  }

  private commands: CommandRegistry;
  private settings: ILabkitSettings;
  private clusterList: ICluster[] = [];
  private cards = new Map<string, ClusterCard>();
  private runs: IRun[] = [];
  private clusterConditions: Conditions | null = null;
  private batchConditions: Conditions | null = null;
  private loaded = false;
  private polls = 0;
  private timer = 0;
  private pending = new Set<string>();
  private connectionError: string | null = null;
  private actionError: string | null = null;
  private runsError: string | null = null;
  private backendList: IBackend[] = [];
  private backendsLoaded = new PromiseDelegate<readonly IBackend[]>();
  private backendsLoading: Promise<void> | null = null;
  private startButtons = new Map<Backend, HTMLButtonElement>();
  private startRow: HTMLElement = h('div', { className: 'labkit-row' });
  private slurmRow: HTMLElement = h('div', { className: 'labkit-slurm-rows', hidden: true });
  private banner!: HTMLElement;
  private list!: HTMLElement;
  private empty!: HTMLElement;
  private runsNode!: HTMLElement;
  private workersInput!: HTMLInputElement;
  private addressInput!: HTMLInputElement;
  private nameInput!: HTMLInputElement;
  private backendSelect!: HTMLSelectElement;
  private tokenInput!: HTMLInputElement;
  private tlsInputs: HTMLInputElement[] = [];
}
