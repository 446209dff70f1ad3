/**
 * The extension's settings (schema/plugin.json), as one typed object. Without a setting
 * registry (or before it answers) the schema's defaults hold.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

/** A backend's name as the server registers it (`GET /labkit/api/backends`). */
export type Backend = string;

export interface ILabkitSettings {
  /** Seconds between polls while the panel is visible. */
  pollInterval: number;
  defaultBackend: Backend;
  defaultWorkers: number;
}

export const DEFAULT_SETTINGS: ILabkitSettings = {
  pollInterval: 2,
  defaultBackend: 'dask',
  defaultWorkers: 2
};

/** The composite settings, with anything out of range falling back to its default. */
export function readSettings(settings: ISettingRegistry.ISettings): ILabkitSettings {
  const poll = Number(settings.get('pollInterval').composite);
  const backend = settings.get('defaultBackend').composite;
  const workers = Number(settings.get('defaultWorkers').composite);
  return {
    pollInterval: Number.isFinite(poll) && poll > 0 ? poll : DEFAULT_SETTINGS.pollInterval,
    defaultBackend:
      typeof backend === 'string' && backend ? backend : DEFAULT_SETTINGS.defaultBackend,
    defaultWorkers:
      Number.isInteger(workers) && workers >= 1 ? workers : DEFAULT_SETTINGS.defaultWorkers
  };
}
