/**
 * Calls to the labkit server extension (`/labkit/api/...`), with Jupyter's own
 * authentication and XSRF handling (ServerConnection does both).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One cluster as `GET /labkit/api/clusters` describes it (DESIGN §5). */
export interface ICluster {
  id: string;
  name: string;
  backend: 'ray' | 'dask';
  address: string;
  status: string;
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
}

/** One frozen run or batch; fields beyond these are shown as they come. */
export interface IRun {
  name?: string;
  path?: string;
  kind?: string;
  status?: string;
  created?: string;
  [key: string]: unknown;
}

/** Send a request; a non-2xx answer becomes an Error carrying the server's message. */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {}
): Promise<T> {
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

export const api = {
  listClusters: () => requestAPI<ICluster[]>('clusters'),
  startCluster: (backend: string, workers: number) =>
    requestAPI<ICluster>('clusters', {
      method: 'POST',
      body: JSON.stringify({ backend, workers })
    }),
  registerCluster: (address: string, name?: string, backend?: string) =>
    requestAPI<ICluster>('clusters', {
      method: 'POST',
      body: JSON.stringify({
        address,
        ...(name ? { name } : {}),
        ...(backend ? { backend } : {})
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
