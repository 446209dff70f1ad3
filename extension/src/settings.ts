/**
 * The extension's settings (schema/plugin.json), as one typed object. Without a setting
 * registry (or before it answers) the schema's defaults hold.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { IWalltimeWarning } from './notices';

/** A backend's name as the server registers it (`GET /labkit/api/backends`). */
export type Backend = string;

export interface ILabkitSettings {
  /** Seconds between polls while the panel is visible. */
  pollInterval: number;
  defaultBackend: Backend;
  defaultWorkers: number;
  /** When a SLURM job near its walltime is a notification. */
  walltimeWarning: IWalltimeWarning;
}

export const DEFAULT_SETTINGS: ILabkitSettings = {
  pollInterval: 2,
  defaultBackend: 'dask',
  defaultWorkers: 2,
  walltimeWarning: { minutes: 10, fraction: 0.25 }
};

/** The composite settings, with anything out of range falling back to its default. */
export function readSettings(settings: ISettingRegistry.ISettings): ILabkitSettings {
  const poll = Number(settings.get('pollInterval').composite);
  const backend = settings.get('defaultBackend').composite;
  const workers = Number(settings.get('defaultWorkers').composite);
  const minutes = Number(settings.get('walltimeWarningMinutes').composite);
  const fraction = Number(settings.get('walltimeWarningFraction').composite);
  const defaults = DEFAULT_SETTINGS.walltimeWarning;
  return {
    pollInterval: Number.isFinite(poll) && poll > 0 ? poll : DEFAULT_SETTINGS.pollInterval,
    defaultBackend:
      typeof backend === 'string' && backend ? backend : DEFAULT_SETTINGS.defaultBackend,
    defaultWorkers:
      Number.isInteger(workers) && workers >= 1 ? workers : DEFAULT_SETTINGS.defaultWorkers,
    walltimeWarning: {
      minutes: Number.isFinite(minutes) && minutes >= 0 ? minutes : defaults.minutes,
      fraction:
        Number.isFinite(fraction) && fraction >= 0 && fraction <= 1 ? fraction : defaults.fraction
    }
  };
}
