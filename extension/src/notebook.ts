/** Put `%labkit connect NAME` into the active notebook, loading the magics if needed. */
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { ICluster } from './api';

export function insertConnectCell(tracker: INotebookTracker | null, cluster: ICluster): void {
  const panel = tracker?.currentWidget;
  if (!panel) {
    throw new Error('open a notebook first: the connect cell goes into the active notebook');
  }
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    throw new Error('the active notebook is still loading');
  }
  let loaded = false;
  for (let i = 0; i < model.cells.length; i++) {
    if (model.cells.get(i).sharedModel.getSource().includes('%load_ext labkit')) {
      loaded = true;
      break;
    }
  }
  const source = loaded ? cluster.connect : `%load_ext labkit\n${cluster.connect}`;
  const active = notebook.activeCell;
  const reuse =
    active !== null &&
    active !== undefined &&
    active.model.type === 'code' &&
    active.model.sharedModel.getSource().trim() === '';
  if (!reuse) {
    NotebookActions.insertBelow(notebook);
  }
  const cell = notebook.activeCell;
  if (!cell) {
    throw new Error('could not add a cell to the notebook');
  }
  if (cell.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  notebook.activeCell!.model.sharedModel.setSource(source);
  notebook.mode = 'command';
  panel.activate();
}
