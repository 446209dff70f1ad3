/**
 * labkit's JupyterLab extension: the cluster sidebar, and commands (in the palette under
 * "labkit") to start, scale and stop clusters, insert `%labkit connect NAME` into the active
 * notebook and open a dashboard in a tab. Settings: schema/plugin.json.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { addCommands } from './commands';
import { DEFAULT_SETTINGS, ILabkitSettings, readSettings } from './settings';
import { ClusterPanel, PANEL_ID } from './sidebar';

const clusterIconSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="5" r="3"/>
    <circle cx="5" cy="18" r="3"/>
    <circle cx="19" cy="18" r="3"/>
    <path d="M11 7.5h2v3.2l5.1 4.3-1.3 1.5L12 12.4l-4.8 4.1-1.3-1.5 5.1-4.3z"/>
  </g>
</svg>`;

export const clusterIcon = new LabIcon({ name: 'labkit:clusters', svgstr: clusterIconSvg });

/** The id names schema/plugin.json, so the settings editor finds its schema. */
const PLUGIN_ID = 'labkit:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Start, scale, stop and attach Ray and Dask clusters from the sidebar.',
  autoStart: true,
  optional: [INotebookTracker, ILayoutRestorer, ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null
  ) => {
    let settings: ILabkitSettings = DEFAULT_SETTINGS;
    const panel = new ClusterPanel({ commands: app.commands, settings });
    panel.title.icon = clusterIcon;
    addCommands({ app, panel, tracker, settings: () => settings }, palette);
    app.shell.add(panel, 'left', { rank: 200 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    if (registry) {
      registry
        .load(PLUGIN_ID)
        .then(loaded => {
          const apply = () => {
            settings = readSettings(loaded);
            panel.updateSettings(settings);
          };
          apply();
          loaded.changed.connect(apply);
        })
        .catch(error => console.warn('labkit: settings not loaded, using defaults', error));
    }
  }
};

export default plugin;
