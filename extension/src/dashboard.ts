/** Dashboards in JupyterLab tabs: the URL is the Jupyter server's proxied path. */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';

import { ICluster } from './api';

const open = new Map<string, MainAreaWidget<IFrame>>();

export function openDashboard(app: JupyterFrontEnd, cluster: ICluster): void {
  if (!cluster.dashboard_url) {
    throw new Error(`${cluster.name} has no dashboard`);
  }
  const existing = open.get(cluster.id);
  if (existing && !existing.isDisposed) {
    if (existing.content.url !== cluster.dashboard_url) {
      existing.content.url = cluster.dashboard_url;
    }
    app.shell.activateById(existing.id);
    return;
  }
  const content = new IFrame({
    sandbox: ['allow-scripts', 'allow-same-origin', 'allow-forms', 'allow-popups']
  });
  content.url = cluster.dashboard_url;
  const widget = new MainAreaWidget({ content });
  widget.id = `labkit-dashboard-${cluster.id}`;
  widget.title.label = `${cluster.name} dashboard`;
  widget.title.closable = true;
  widget.addClass('labkit-dashboard');
  widget.disposed.connect(() => open.delete(cluster.id));
  open.set(cluster.id, widget);
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
}
