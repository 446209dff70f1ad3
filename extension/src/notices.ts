/**
 * When the user is told that something ended: a batch that finished or was interrupted, a
 * SLURM cluster that broke (its error says why), a SLURM job near its walltime. Each thing
 * watched has a condition per poll; `news` compares two polls and gives a notice only where
 * the condition changed, so a poll that sees the same thing again says nothing. Pure: the
 * panel (sidebar.ts) shows the notices with JupyterLab's Notification.
 */
import { ICluster, IJobState, IRun } from './api';

export type NoticeLevel = 'success' | 'warning' | 'error';

export interface INotice {
  level: NoticeLevel;
  message: string;
}

/** One watched thing in one poll: its condition, and what to say on entering it. */
export interface IObserved {
  condition: string;
  notice: INotice | null;
}

/** What each watched thing (by key) was like when last seen. */
export type Conditions = ReadonlyMap<string, string>;

/** When a running job counts as near its walltime: `minutes` before it, or `fraction` of
 * the walltime before it, whichever is sooner (a short job is not near it from its start). */
export interface IWalltimeWarning {
  minutes: number;
  fraction: number;
}

/** Seconds as a clock: 45 -> "0:45", 3725 -> "1:02:05". */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n: number) => String(n).padStart(2, '0');
  const clock = `${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
  return s >= 3600 ? `${Math.floor(s / 3600)}:${clock}` : clock.replace(/^0/, '');
}

/** The running job nearest its walltime among those within the warning; null if none. */
export function nearWalltime(
  jobs: readonly IJobState[],
  warning: IWalltimeWarning
): IJobState | null {
  let nearest: IJobState | null = null;
  for (const job of jobs) {
    const left = job.time_left_s;
    if (job.state !== 'RUNNING' || left === null || left === undefined) {
      continue;
    }
    const limit = job.time_limit_s;
    const byFraction = limit ? warning.fraction * limit : Infinity;
    const within = Math.min(warning.minutes * 60, byFraction);
    if (
      within > 0 &&
      left <= within &&
      (nearest === null || left < (nearest.time_left_s ?? Infinity))
    ) {
      nearest = job;
    }
  }
  return nearest;
}

/** The first line of a (possibly long) message, without the "; the end of its output:"
 * that introduces a job's output on the card. */
function firstLine(text: string | null): string {
  return (text ?? '').split('\n')[0].replace(/;\s*the end of its output:?$/, '');
}

/** Each SLURM cluster (one with jobs) by `cluster:ID`. */
export function observeClusters(
  clusters: readonly ICluster[],
  warning: IWalltimeWarning
): Map<string, IObserved> {
  const seen = new Map<string, IObserved>();
  for (const cluster of clusters) {
    if (!cluster.jobs) {
      continue;
    }
    const key = `cluster:${cluster.id}`;
    const near = nearWalltime(cluster.jobs, warning);
    if (cluster.status === 'error') {
      const message = `${cluster.name} stopped: ${firstLine(cluster.error) || 'error'}`;
      seen.set(key, { condition: 'error', notice: { level: 'error', message } });
    } else if (near) {
      const left = formatSeconds(near.time_left_s ?? 0);
      const message = `${cluster.name}: SLURM job ${near.job_id} reaches its walltime in ${left}`;
      seen.set(key, { condition: `near:${near.job_id}`, notice: { level: 'warning', message } });
    } else {
      seen.set(key, { condition: cluster.status, notice: null });
    }
  }
  return seen;
}

/** "7 ok, 1 failed": a batch's nonzero counts. */
function counts(runs: Record<string, unknown>): string {
  return Object.entries(runs)
    .filter(([name, count]) => name !== 'total' && name !== 'duration_s' && Number(count) > 0)
    .map(([name, count]) => `${count} ${name}`)
    .join(', ');
}

/** Each batch by `batch:PATH`: finished (with failures or not) or interrupted. */
export function observeBatches(runs: readonly IRun[]): Map<string, IObserved> {
  const seen = new Map<string, IObserved>();
  for (const run of runs) {
    if (run.kind !== 'batch') {
      continue;
    }
    const status = run.status ?? 'unknown';
    const tally = counts(run.runs);
    const failed = ['failed', 'lost', 'timeout', 'cancelled'].some(s => Number(run.runs[s]) > 0);
    let notice: INotice | null = null;
    if (status === 'done') {
      const level = failed ? 'warning' : 'success';
      notice = { level, message: `Batch ${run.name} finished: ${tally}` };
    } else if (status === 'interrupted') {
      notice = { level: 'error', message: `Batch ${run.name} was interrupted: ${tally}` };
    }
    seen.set(`batch:${run.path}`, { condition: status, notice });
  }
  return seen;
}

/**
 * The notices for what changed since `before` (null: the first poll, which only sets the
 * baseline: what had ended before the page opened is not news). A thing seen for the first
 * time after that is news if it enters a noticed condition.
 */
export function news(before: Conditions | null, now: ReadonlyMap<string, IObserved>): INotice[] {
  if (before === null) {
    return [];
  }
  const notices: INotice[] = [];
  for (const [key, seen] of now) {
    if (seen.notice && before.get(key) !== seen.condition) {
      notices.push(seen.notice);
    }
  }
  return notices;
}

/** The conditions to compare the next poll with. */
export function conditions(now: ReadonlyMap<string, IObserved>): Conditions {
  return new Map(Array.from(now, ([key, seen]) => [key, seen.condition]));
}
