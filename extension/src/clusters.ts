/**
 * One card per cluster: identity, live figures, and what can be done with it. A card is made
 * once, when its cluster first appears, and `update` rewrites its figures in place on every
 * poll, so whatever the user is typing into it (and the focus) survives the poll.
 */
import { CommandRegistry } from '@lumino/commands';

import { IBackend, ICluster, IJobState } from './api';
import { CommandIDs } from './commandids';
import { formatBytes, formatCount, h } from './dom';
import { formatSeconds } from './notices';

/** "1234 RUNNING 29:58 left", "1235 PENDING (Resources)", or "1236 ENDED (TIMEOUT)". */
function describeJob(job: IJobState): string {
  const why = job.state === 'ENDED' ? job.ended_as : job.reason;
  const left = job.state === 'RUNNING' && typeof job.time_left_s === 'number';
  return (
    `${job.job_id} ${job.state}` +
    (why ? ` (${why})` : '') +
    (left ? ` ${formatSeconds(job.time_left_s as number)} left` : '')
  );
}

const ORIGIN_LABEL: Record<string, string> = {
  managed: 'local',
  registered: 'remote',
  kernel: 'kernel'
};

/** Set text only when it changed, so an unchanged figure costs no DOM mutation. */
function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

function setAttr(node: HTMLElement, name: string, value: string | null): void {
  if (value === null) {
    node.removeAttribute(name);
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

class Stat {
  readonly node: HTMLElement;
  constructor(label: string) {
    this.value = h('span', { className: 'labkit-stat-value' });
    this.label = h('span', { className: 'labkit-stat-label' }, label);
    this.node = h('div', { className: 'labkit-stat' }, this.value, this.label);
  }
  set(value: string, label?: string): void {
    setText(this.value, value);
    if (label !== undefined) {
      setText(this.label, label);
    }
  }
  private value: HTMLElement;
  private label: HTMLElement;
}

export class ClusterCard {
  readonly node: HTMLElement;
  readonly id: string;

  constructor(
    cluster: ICluster,
    private commands: CommandRegistry,
    private describe: (backend: string, on: string) => IBackend
  ) {
    this.id = cluster.id;
    this.name = h('span', { className: 'labkit-card-name' });
    this.statusText = document.createTextNode('');
    this.status = h(
      'span',
      { className: 'labkit-status' },
      h('span', { className: 'labkit-status-dot' }),
      this.statusText
    );
    this.backend = h('span', { className: 'labkit-backend' });
    this.origin = h('span', { className: 'labkit-origin' });
    this.address = h('code', { className: 'labkit-address' });
    this.error = h('div', { className: 'labkit-card-error', role: 'alert', hidden: true });
    this.jobList = h('span', { className: 'labkit-job-list' });
    this.jobs = h(
      'div',
      { className: 'labkit-jobs', hidden: true },
      h('span', { className: 'labkit-jobs-label' }, 'SLURM jobs '),
      this.jobList
    );
    this.joinCommand = h('code', { className: 'labkit-join-command' });
    this.join = h(
      'div',
      { className: 'labkit-join', hidden: true },
      h('span', { className: 'labkit-join-label' }, 'A node joins with'),
      this.joinCommand
    );

    this.scaleLabel = h('label', {});
    this.scaleInput = h('input', {
      type: 'number',
      min: '1',
      className: 'labkit-input labkit-scale-input',
      oninput: () => (this.edited = true),
      onkeydown: (event: KeyboardEvent) => {
        if (event.key === 'Enter') {
          event.preventDefault();
          this.scale();
        }
      }
    });
    this.scaleButton = h(
      'button',
      { className: 'labkit-button labkit-scale-button', onclick: () => this.scale() },
      'Scale'
    );
    this.scaleRow = h(
      'div',
      { className: 'labkit-scale' },
      this.scaleLabel,
      this.scaleInput,
      this.scaleButton
    );

    this.insertButton = this.commandButton(
      'labkit-button labkit-mod-primary labkit-insert',
      CommandIDs.insertConnect,
      'Insert connect cell'
    );
    this.dashboardButton = this.commandButton(
      'labkit-button labkit-open-dashboard',
      CommandIDs.openDashboard,
      'Dashboard'
    );
    this.dashboardLink = h(
      'a',
      {
        className: 'labkit-button labkit-dashboard-link',
        target: '_blank',
        rel: 'noopener',
        title: 'open the dashboard in a new browser tab'
      },
      '↗'
    );
    this.stopButton = this.commandButton(
      'labkit-button labkit-mod-danger labkit-stop',
      CommandIDs.stop,
      'Stop'
    );

    this.node = h(
      'div',
      { className: 'labkit-card', dataset: { clusterId: cluster.id } },
      h('div', { className: 'labkit-card-header' }, this.name, this.status),
      h('div', { className: 'labkit-meta' }, this.backend, this.origin, this.address),
      h(
        'div',
        { className: 'labkit-stats' },
        this.workers.node,
        this.cpus.node,
        this.gpus.node,
        this.memory.node
      ),
      this.error,
      this.jobs,
      this.join,
      this.scaleRow,
      h(
        'div',
        { className: 'labkit-actions' },
        this.insertButton,
        this.dashboardButton,
        this.dashboardLink,
        this.stopButton
      )
    );
    this.update(cluster, false);
  }

  /** Bring every figure up to date; the Scale field keeps what the user typed. */
  update(cluster: ICluster, busy: boolean): void {
    const node = this.node;
    const { name, status, backend } = cluster;
    node.className = `labkit-card labkit-card-${status}`;
    node.dataset.status = status;
    node.dataset.updates = String(Number(node.dataset.updates ?? '0') + 1);

    setText(this.name, name);
    setAttr(this.name, 'title', name);
    this.status.className = `labkit-status labkit-status-${status}`;
    setAttr(this.status, 'title', status);
    if (this.statusText.data !== status) {
      this.statusText.data = status;
    }
    this.backend.className = `labkit-backend labkit-backend-${backend}`;
    const words = this.describe(backend, cluster.jobs ? 'slurm' : 'local');
    setText(this.backend, words.label);
    const origin = cluster.jobs ? 'SLURM' : ORIGIN_LABEL[cluster.origin];
    setText(this.origin, origin ?? cluster.origin);
    setText(this.address, cluster.address || '…');
    setAttr(this.address, 'title', cluster.address);

    this.workers.set(formatCount(cluster.workers), words.worker_unit);
    this.cpus.set(formatCount(cluster.cpus), 'CPUs');
    this.gpus.set(formatCount(cluster.gpus), 'GPUs');
    this.memory.set(formatBytes(cluster.memory_bytes), 'memory');

    this.error.hidden = !cluster.error;
    setText(this.error, cluster.error ?? '');

    this.jobs.hidden = !cluster.jobs?.length;
    setText(this.jobList, (cluster.jobs ?? []).map(describeJob).join(' · '));

    this.join.hidden = !cluster.join;
    setText(this.joinCommand, cluster.join ?? '');
    setAttr(this.joinCommand, 'title', 'copy the credential files it names to the node first');

    this.scaleRow.hidden = !cluster.managed;
    setText(this.scaleLabel, words.scale_label);
    setAttr(this.scaleInput, 'title', words.scale_hint);
    setAttr(this.scaleInput, 'aria-label', `workers for ${name}`);
    // The server's figure fills the field only while the user is not working in it.
    if (!this.edited && document.activeElement !== this.scaleInput) {
      const value = String(cluster.requested_workers ?? cluster.workers ?? 1);
      if (this.scaleInput.value !== value) {
        this.scaleInput.value = value;
      }
    }
    this.scaleButton.disabled = busy || status === 'stopping';
    setAttr(this.scaleButton, 'aria-label', `scale ${name}`);

    this.insertButton.disabled = busy;
    setAttr(this.insertButton, 'title', `insert "${cluster.connect}" into the active notebook`);
    const dashboard = cluster.dashboard_url;
    this.dashboardButton.disabled = busy || !dashboard;
    setAttr(
      this.dashboardButton,
      'title',
      dashboard ? 'open the dashboard in a JupyterLab tab' : 'no dashboard'
    );
    this.dashboardLink.hidden = !dashboard;
    setAttr(this.dashboardLink, 'href', dashboard);
    setAttr(this.dashboardLink, 'aria-label', `${name} dashboard in a new browser tab`);

    this.stopButton.hidden = cluster.origin === 'kernel';
    this.stopButton.disabled = busy || status === 'stopping';
    setText(this.stopButton, cluster.managed ? 'Stop' : 'Forget');
    setAttr(
      this.stopButton,
      'title',
      cluster.managed
        ? 'stop this cluster and all its processes'
        : 'forget this address (the cluster keeps running)'
    );
  }

  private commandButton(className: string, command: string, label: string): HTMLButtonElement {
    return h(
      'button',
      {
        className,
        onclick: () => void this.commands.execute(command, { id: this.id })
      },
      label
    );
  }

  private scale(): void {
    if (this.scaleButton.disabled) {
      return;
    }
    const workers = Number(this.scaleInput.value);
    void this.commands.execute(CommandIDs.scale, { id: this.id, workers }).then(done => {
      // Once the request went through, the field follows the server again.
      if (done !== false) {
        this.edited = false;
      }
    });
  }

  private edited = false;
  private name: HTMLElement;
  private status: HTMLElement;
  private statusText: Text;
  private backend: HTMLElement;
  private origin: HTMLElement;
  private address: HTMLElement;
  private workers = new Stat('workers');
  private cpus = new Stat('CPUs');
  private gpus = new Stat('GPUs');
  private memory = new Stat('memory');
  private error: HTMLElement;
  private jobs: HTMLElement;
  private jobList: HTMLElement;
  private join: HTMLElement;
  private joinCommand: HTMLElement;
  private scaleRow: HTMLElement;
  private scaleLabel: HTMLElement;
  private scaleInput: HTMLInputElement;
  private scaleButton: HTMLButtonElement;
  private insertButton: HTMLButtonElement;
  private dashboardButton: HTMLButtonElement;
  private dashboardLink: HTMLAnchorElement;
  private stopButton: HTMLButtonElement;
}
