/**
 * labkit's JupyterLab extension: the cluster sidebar, a command to open a dashboard in a
 * tab, and one to insert `%labkit connect NAME` into the active notebook.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { openDashboard } from './dashboard';
import { insertConnectCell } from './notebook';
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

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'labkit:clusters',
  description: 'Start, scale, stop and attach Ray and Dask clusters from the sidebar.',
  autoStart: true,
  optional: [INotebookTracker, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker | null,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new ClusterPanel({
      openDashboard: cluster => openDashboard(app, cluster),
      insertConnect: cluster => insertConnectCell(tracker, cluster)
    });
    panel.title.icon = clusterIcon;
    app.shell.add(panel, 'left', { rank: 200 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
  }
};

export default plugin;
