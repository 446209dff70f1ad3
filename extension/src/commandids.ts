/** The ids of labkit's JupyterLab commands; key bindings and the palette refer to these. */
export namespace CommandIDs {
  export const start = 'labkit:start-cluster';
  export const scale = 'labkit:scale-cluster';
  export const stop = 'labkit:stop-cluster';
  export const insertConnect = 'labkit:insert-connect-cell';
  export const openDashboard = 'labkit:open-dashboard';
  export const refresh = 'labkit:refresh-clusters';
  export const showPanel = 'labkit:show-clusters-panel';
}
