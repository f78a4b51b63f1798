import fs from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  cpuS: number;
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm is in parentheses and may hold spaces; the fields after it are space-separated.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // fields[0] is state (field 3), so field n is fields[n - 3]: ppid 4, utime 14, stime 15.
    return {
      pid,
      ppid: Number(fields[1]),
      comm,
      cpuS: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S,
    };
  } catch {
    return undefined; // gone meanwhile
  }
}

/**
 * CPU seconds used so far by this process and every descendant, grouped: `ingestor` (the given
 * pid), `postgres` (the postmaster and its backends), `mosquitto`, and `bench` (this process: the
 * publisher and the benchmark's own queries). Descendants that have exited are not counted.
 */
export function cpuByProcess(ingestorPid: number | undefined): Record<string, number> {
  const procs = new Map<number, ProcInfo>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = readProc(Number(entry));
    if (info) procs.set(info.pid, info);
  }
  const isDescendant = (pid: number): boolean => {
    for (let p = procs.get(pid); p; p = procs.get(p.ppid)) if (p.ppid === process.pid) return true;
    return false;
  };
  const totals: Record<string, number> = { bench: procs.get(process.pid)?.cpuS ?? 0 };
  for (const p of procs.values()) {
    if (p.pid === process.pid || !isDescendant(p.pid)) continue;
    const group =
      p.pid === ingestorPid
        ? 'ingestor'
        : p.comm.startsWith('postgres') || p.comm.startsWith('postmaster')
          ? 'postgres'
          : p.comm.startsWith('mosquitto')
            ? 'mosquitto'
            : 'other';
    totals[group] = (totals[group] ?? 0) + p.cpuS;
  }
  return totals;
}

/** `after - before`, per group. */
export function cpuDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [group, s] of Object.entries(after)) delta[group] = s - (before[group] ?? 0);
  return delta;
}

/** e.g. `ingestor 0.92, postgres 0.61, mosquitto 0.12, bench 0.25 cores` over `seconds`. */
export function formatCores(delta: Record<string, number>, seconds: number): string {
  const order = ['ingestor', 'postgres', 'mosquitto', 'bench', 'other'];
  return order
    .filter((g) => delta[g] !== undefined && delta[g] > 0)
    .map((g) => `${g} ${(delta[g]! / seconds).toFixed(2)}`)
    .join(', ');
}

/** Resident memory of a process: now (VmRSS) and its peak so far (VmHWM), in MB (Linux). */
export function rssMb(pid: number): { now: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { now: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}
