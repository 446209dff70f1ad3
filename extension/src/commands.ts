/**
 * labkit's JupyterLab commands. The sidebar's buttons run these, so the command palette, the
 * menus and key bindings (Settings > Keyboard Shortcuts) do exactly what the buttons do.
 * A command that names no cluster (`id`) asks for one, and one that needs a number asks for it.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ReadonlyJSONObject, ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { api, ICluster } from './api';
import { CommandIDs } from './commandids';
import { openDashboard } from './dashboard';
import { insertConnectCell } from './notebook';
import { ClusterPanel } from './sidebar';
import { Backend, ILabkitSettings } from './settings';

export { CommandIDs };

const CATEGORY = 'labkit';

export interface ICommandContext {
  app: JupyterFrontEnd;
  panel: ClusterPanel;
  tracker: INotebookTracker | null;
  settings: () => ILabkitSettings;
}

/** A failure shows in the panel's banner, and as a notification when the panel is hidden. */
function fail(panel: ClusterPanel, message: string): false {
  panel.report(message);
  if (!panel.isVisible) {
    Notification.error(message, { autoClose: 8000 });
  }
  return false;
}

/** The cluster named by `args.id`, or the one the user picks (null when cancelled). */
async function chooseCluster(
  panel: ClusterPanel,
  args: ReadonlyPartialJSONObject,
  verb: string,
  accept: (cluster: ICluster) => boolean = () => true
): Promise<ICluster | null> {
  const id = typeof args.id === 'string' ? args.id : null;
  let clusters = panel.clusters;
  if (id === null || !clusters.some(c => c.id === id)) {
    clusters = await api.listClusters();
  }
  if (id !== null) {
    const cluster = clusters.find(c => c.id === id);
    if (!cluster) {
      throw new Error(`no cluster with id ${id}`);
    }
    return cluster;
  }
  const candidates = clusters.filter(accept);
  if (candidates.length === 0) {
    throw new Error(`no cluster to ${verb}`);
  }
  if (candidates.length === 1) {
    return candidates[0];
  }
  const labels = candidates.map(c => `${c.name} (${c.backend}, ${c.status})`);
  const result = await InputDialog.getItem({
    title: `Cluster to ${verb}`,
    items: labels,
    current: 0
  });
  if (!result.button.accept || result.value === null) {
    return null;
  }
  return candidates[labels.indexOf(result.value)] ?? null;
}

function positiveInteger(value: unknown): number | null {
  const number = Number(value);
  return Number.isInteger(number) && number >= 1 ? number : null;
}

export function addCommands(context: ICommandContext, palette: ICommandPalette | null): void {
  const { app, panel, tracker, settings } = context;
  const { commands } = app;

  commands.addCommand(CommandIDs.start, {
    label: args => {
      const backend = args.backend as Backend | undefined;
      if (!backend) {
        return 'Start Local Cluster';
      }
      const on = typeof args.on === 'string' ? args.on : 'local';
      const label = panel.describe(backend, on).label;
      return on === 'local' ? `Start Local ${label} Cluster` : `Start ${label} Cluster`;
    },
    caption: args =>
      args.backend
        ? `Start a local ${String(args.backend)} cluster with the default number of workers`
        : 'Start a local cluster of the default backend and workers (labkit settings)',
    describedBy: {
      args: {
        type: 'object',
        properties: {
          backend: { type: 'string' },
          on: { type: 'string', enum: ['local', 'slurm'] },
          profile: { type: 'string' },
          workers: { type: 'integer', minimum: 1 }
        }
      }
    },
    execute: async args => {
      const backend = (args.backend as Backend | undefined) ?? settings().defaultBackend;
      const on = typeof args.on === 'string' ? args.on : 'local';
      const profile = typeof args.profile === 'string' ? args.profile : undefined;
      const known = (await panel.knownBackends())
        .filter(b => (b.on ?? 'local') === on)
        .map(b => b.name);
      if (!known.includes(backend)) {
        const choices = known.length ? `use ${known.join(' or ')}` : 'the server named none';
        const where = on === 'local' ? '' : ` on ${on}`;
        return fail(panel, `unknown backend ${String(backend)}${where}: ${choices}`);
      }
      const workers =
        args.workers === undefined ? settings().defaultWorkers : positiveInteger(args.workers);
      if (workers === null) {
        return fail(panel, `workers must be a whole number of at least 1, not ${args.workers}`);
      }
      const key = on === 'local' ? backend : `${backend}-${on}`;
      const ok = await panel.act(`start-${key}`, () =>
        api.startCluster(backend, workers, on, profile)
      );
      return ok || fail(panel, panel.lastError ?? `could not start a ${backend} cluster`);
    }
  });

  commands.addCommand(CommandIDs.scale, {
    label: args => (args.id ? `Scale ${String(args.id)}` : 'Scale Cluster…'),
    caption: 'Change how many workers a local cluster has',
    describedBy: {
      args: {
        type: 'object',
        properties: { id: { type: 'string' }, workers: { type: 'integer', minimum: 1 } }
      }
    },
    execute: async args => {
      try {
        const cluster = await chooseCluster(panel, args, 'scale', c => c.managed);
        if (!cluster) {
          return false;
        }
        if (!cluster.managed) {
          return fail(panel, `${cluster.name} is not started by labkit: it cannot be scaled here`);
        }
        let workers: number | null;
        if (args.workers === undefined) {
          const answer = await InputDialog.getNumber({
            title: `Workers for ${cluster.name}`,
            value: cluster.requested_workers ?? cluster.workers ?? 1
          });
          if (!answer.button.accept) {
            return false;
          }
          workers = positiveInteger(answer.value);
        } else {
          workers = positiveInteger(args.workers);
        }
        if (workers === null) {
          return fail(panel, `workers must be a whole number of at least 1`);
        }
        const count = workers;
        const ok = await panel.act(cluster.id, () => api.scaleCluster(cluster.id, count));
        return ok || fail(panel, panel.lastError ?? `could not scale ${cluster.name}`);
      } catch (error) {
        return fail(panel, (error as Error).message);
      }
    }
  });

  commands.addCommand(CommandIDs.stop, {
    label: args => (args.id ? `Stop ${String(args.id)}` : 'Stop Cluster…'),
    caption: 'Stop a local cluster, or forget a remote address',
    execute: async args => {
      try {
        const cluster = await chooseCluster(panel, args, 'stop', c => c.origin !== 'kernel');
        if (!cluster) {
          return false;
        }
        const ok = await panel.act(cluster.id, () => api.removeCluster(cluster.id));
        return ok || fail(panel, panel.lastError ?? `could not stop ${cluster.name}`);
      } catch (error) {
        return fail(panel, (error as Error).message);
      }
    }
  });

  commands.addCommand(CommandIDs.insertConnect, {
    label: 'Insert Connect Cell…',
    caption: 'Insert `%labkit connect NAME` into the active notebook',
    isEnabled: () => tracker?.currentWidget !== null && tracker?.currentWidget !== undefined,
    execute: async args => {
      try {
        const cluster = await chooseCluster(panel, args, 'connect to');
        if (!cluster) {
          return false;
        }
        insertConnectCell(tracker, cluster);
        panel.report(null);
        return true;
      } catch (error) {
        return fail(panel, (error as Error).message);
      }
    }
  });

  commands.addCommand(CommandIDs.openDashboard, {
    label: 'Open Cluster Dashboard…',
    caption: "Open a cluster's dashboard in a JupyterLab tab",
    execute: async args => {
      try {
        const cluster = await chooseCluster(
          panel,
          args,
          'open the dashboard of',
          c => c.dashboard_url !== null
        );
        if (!cluster) {
          return false;
        }
        openDashboard(app, cluster);
        panel.report(null);
        return true;
      } catch (error) {
        return fail(panel, (error as Error).message);
      }
    }
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Clusters',
    caption: 'Ask the server for cluster and run status now',
    execute: () => panel.refresh(true)
  });

  commands.addCommand(CommandIDs.showPanel, {
    label: 'Show Clusters Panel',
    execute: () => app.shell.activateById(panel.id)
  });

  if (palette) {
    const items: { command: string; args?: ReadonlyJSONObject }[] = [
      { command: CommandIDs.start },
      { command: CommandIDs.scale },
      { command: CommandIDs.stop },
      { command: CommandIDs.insertConnect },
      { command: CommandIDs.openDashboard },
      { command: CommandIDs.refresh },
      { command: CommandIDs.showPanel }
    ];
    for (const item of items) {
      palette.addItem({ ...item, category: CATEGORY });
    }
    // one "Start Local <Backend> Cluster" item per backend the server starts
    void panel.backends.then(backends => {
      for (const backend of backends) {
        const on = backend.on ?? 'local';
        palette.addItem({
          command: CommandIDs.start,
          args: on === 'local' ? { backend: backend.name } : { backend: backend.name, on },
          category: CATEGORY
        });
      }
    });
  }
}
