import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { homedir } from 'node:os';
import path from 'node:path';

export type ContainerRuntimeProbe =
  | { available: true; endpoint: string; ms: number }
  | { available: false; reason: string; ms: number };

/** Where Docker, Docker Desktop, Podman, Colima and Rancher Desktop put their socket. */
export function candidateSockets(env: NodeJS.ProcessEnv): string[] {
  const home = env.HOME ?? homedir();
  const runtimeDir = env.XDG_RUNTIME_DIR;
  return [
    '/var/run/docker.sock',
    path.join(home, '.docker', 'run', 'docker.sock'),
    path.join(home, '.docker', 'desktop', 'docker.sock'),
    path.join(home, '.colima', 'default', 'docker.sock'),
    path.join(home, '.rd', 'docker.sock'),
    ...(runtimeDir
      ? [path.join(runtimeDir, 'docker.sock'), path.join(runtimeDir, 'podman', 'podman.sock')]
      : []),
  ];
}

/** docker.host from ~/.testcontainers.properties, which testcontainers itself honours. */
function propertiesDockerHost(env: NodeJS.ProcessEnv): string | undefined {
  const file = path.join(env.HOME ?? homedir(), '.testcontainers.properties');
  if (!existsSync(file)) return undefined;
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.trim().startsWith('docker.host='));
  return line?.split('=').slice(1).join('=').trim() || undefined;
}

function ping(
  target: { socketPath: string } | { host: string; port: number },
): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request({ ...target, path: '/_ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `answered HTTP ${res.statusCode}`);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 1 s')));
    req.on('error', (error) => resolve(error.message));
    req.end();
  });
}

/**
 * Whether a Docker-compatible engine answers, decided without loading testcontainers
 * (whose own detection is much slower to say no). Missing sockets are ruled out with a
 * stat each, so a machine without a runtime gets its answer in about a millisecond.
 */
export async function probeContainerRuntime(
  env: NodeJS.ProcessEnv = process.env,
  candidates: string[] = candidateSockets(env),
): Promise<ContainerRuntimeProbe> {
  const started = performance.now();
  const ms = () => Math.round((performance.now() - started) * 10) / 10;
  const host = env.DOCKER_HOST ?? propertiesDockerHost(env);
  let target: { socketPath: string } | { host: string; port: number };
  let endpoint: string;
  if (host) {
    endpoint = host;
    const url = new URL(host);
    if (url.protocol === 'unix:') target = { socketPath: url.pathname };
    else if (env.DOCKER_TLS_VERIFY || url.port === '2376') {
      // A TLS endpoint needs the client certificates testcontainers reads; let it try.
      return { available: true, endpoint, ms: ms() };
    } else if (url.protocol === 'tcp:' || url.protocol === 'http:') {
      target = { host: url.hostname, port: Number(url.port || 2375) };
    } else {
      // ssh:// and npipe:// are testcontainers' business; let it try.
      return { available: true, endpoint, ms: ms() };
    }
  } else {
    const socket = candidates.find((s) => existsSync(s));
    if (!socket) {
      return {
        available: false,
        reason: `no container runtime: DOCKER_HOST is unset and no socket exists (${candidates.join(', ')})`,
        ms: ms(),
      };
    }
    endpoint = `unix://${socket}`;
    target = { socketPath: socket };
  }
  const failure = await ping(target);
  return failure
    ? {
        available: false,
        reason: `no container runtime answers at ${endpoint}: ${failure}`,
        ms: ms(),
      }
    : { available: true, endpoint, ms: ms() };
}
