/**
 * Calls to the labkit server extension (`/labkit/api/...`), with Jupyter's own
 * authentication and XSRF handling (ServerConnection does both).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

// These records mirror the Python dataclasses the server serialises
// (labkit/server/models.py, labkit/runs/listing.py, labkit/runs/results.py);
// tests/test_api_types.py checks that both sides agree.

export type ClusterStatus =
  'starting' | 'running' | 'scaling' | 'stopping' | 'error' | 'unreachable';

/** One cluster as `GET /labkit/api/clusters` describes it. */
export interface ICluster {
  id: string;
  name: string;
  backend: string;
  address: string;
  status: ClusterStatus;
  workers: number | null;
  cpus: number | null;
  gpus: number | null;
  memory_bytes: number | null;
  dashboard_url: string | null;
  managed: boolean;
  origin: 'managed' | 'registered' | 'kernel';
  requested_workers: number | null;
  error: string | null;
  connect: string;
  /** The command another host runs to join the cluster (a cluster off loopback only). */
  join?: string | null;
  /** Its SLURM jobs (a cluster whose workers are SLURM jobs). */
  jobs?: IJobState[] | null;
}

/** One SLURM job as squeue reports it; ENDED once it has ended. */
export interface IJobState {
  job_id: string;
  state: string;
  /** why it is pending (Resources, Priority, ...) or ended (TimeLimit, NonZeroExitCode) */
  reason: string | null;
  /** SLURM's final state once ENDED (COMPLETED, CANCELLED, FAILED, TIMEOUT, ...), while
   * SLURM remembers the job */
  ended_as?: string | null;
  /** a running job's seconds to its walltime, when the poll was answered */
  time_left_s?: number | null;
  /** its walltime in seconds; null: unlimited */
  time_limit_s?: number | null;
}

/** A backend the server starts clusters of, as `GET /labkit/api/backends` names it. */
export interface IBackend {
  name: string;
  label: string;
  /** what a card's worker count counts: "workers", "nodes" */
  worker_unit: string;
  scale_label: string;
  scale_hint: string;
  /** where its workers run: processes of the server's machine, or SLURM jobs */
  on?: 'local' | 'slurm';
  /** the SLURM profiles (ClusterManager.slurm_profiles) it can start with */
  profiles?: string[];
}

export type RunStatus = 'ok' | 'failed' | 'pending' | 'lost' | 'timeout' | 'cancelled';
export type BatchStatus = 'running' | 'done' | 'interrupted';

/** A frozen bundle as `GET /labkit/api/runs` lists it. */
export interface IListedBundle {
  kind: 'bundle';
  name: string;
  path: string;
  created: string | null;
  status: 'frozen';
  source: string | null;
  parameters: Record<string, unknown>;
  data_files: number;
}

/** One `labkit run`, from its result.json. */
export interface IListedRun {
  kind: 'run';
  name: string;
  path: string;
  created: string | null;
  status: RunStatus | null;
  bundle: string | null;
  parameters: Record<string, unknown>;
  duration_s: number | null;
  /** Its MLflow page: absolute on a tracking server, else relative to Jupyter's base URL. */
  mlflow_page?: string | null;
}

/** One batch, from its results.json; `runs` counts its runs by status. */
export interface IListedBatch {
  kind: 'batch';
  name: string;
  path: string;
  created: string | null;
  status: BatchStatus | null;
  bundle: string | null;
  runs: Record<string, unknown>;
  cluster: Record<string, unknown> | null;
  mlflow_page?: string | null;
}

/** One Ray Tune sweep (`labkit.vae.tune`), from its sweep.json. */
export interface IListedSweep {
  kind: 'sweep';
  name: string;
  path: string;
  created: string | null;
  status: 'running' | 'done' | 'interrupted' | null;
  trials: number | null;
  best: Record<string, unknown> | null;
  mlflow_page?: string | null;
}

/** One entry of `GET /labkit/api/runs`. */
export type IRun = IListedBundle | IListedRun | IListedBatch | IListedSweep;

/** Send a request; a non-2xx answer becomes an Error carrying the server's message. */
export async function requestAPI<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'labkit', 'api', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new Error(`cannot reach the Jupyter server: ${String(error)}`);
  }
  const text = await response.text();
  let data: any = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const message =
      (data && typeof data === 'object' && data.message) ||
      `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return data as T;
}

/** How a remote cluster is registered: its name, backend and credentials (server paths). */
export interface IRegisterOptions {
  name?: string;
  backend?: string;
  /** a Ray cluster's token file */
  tokenFile?: string;
  /** a Dask client's files for a tls:// scheduler */
  tls?: { ca_file: string; cert: string; key?: string };
}

export const api = {
  listBackends: () => requestAPI<IBackend[]>('backends'),
  listClusters: () => requestAPI<ICluster[]>('clusters'),
  startCluster: (backend: string, workers: number, on = 'local', profile?: string) =>
    requestAPI<ICluster>('clusters', {
      method: 'POST',
      body: JSON.stringify(
        on === 'slurm'
          ? { backend, on, jobs: workers, ...(profile ? { profile } : {}) }
          : { backend, workers }
      )
    }),
  registerCluster: (address: string, options: IRegisterOptions = {}) =>
    requestAPI<ICluster>('clusters', {
      method: 'POST',
      body: JSON.stringify({
        address,
        ...(options.name ? { name: options.name } : {}),
        ...(options.backend ? { backend: options.backend } : {}),
        ...(options.tokenFile ? { token_file: options.tokenFile } : {}),
        ...(options.tls ? { tls: options.tls } : {})
      })
    }),
  scaleCluster: (id: string, workers: number) =>
    requestAPI<ICluster>(`clusters/${encodeURIComponent(id)}`, {
      method: 'PATCH',
      body: JSON.stringify({ workers })
    }),
  removeCluster: (id: string) =>
    requestAPI<void>(`clusters/${encodeURIComponent(id)}`, { method: 'DELETE' }),
  listRuns: () => requestAPI<IRun[]>('runs')
};
