import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { candidateSockets } from '../src/container-runtime.js';
import { probeContainerRuntime, startTestServer } from '../src/index.js';

// A stand-in Docker engine on a unix socket that answers only the probe's /_ping.
let fakeEngine: { server: Server; dir: string } | undefined;
async function startFakeEngine(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fake-docker-'));
  const socket = path.join(dir, 'docker.sock');
  const server = createServer((req, res) => {
    res.statusCode = req.url === '/_ping' ? 200 : 500;
    res.end(req.url === '/_ping' ? 'OK' : '{"message":"this engine only answers pings"}');
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  fakeEngine = { server, dir };
  return socket;
}
afterEach(async () => {
  if (!fakeEngine) return;
  const { server, dir } = fakeEngine;
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
  fakeEngine = undefined;
});

// A DOCKER_HOST where nothing listens: the machine's own runtime, if it has one (GitHub's
// runners do), is never asked.
const noRuntime = { HOME: '/nonexistent-home', DOCKER_HOST: 'unix:///nonexistent/docker.sock' };

describe('probeContainerRuntime()', () => {
  it('says no within milliseconds when DOCKER_HOST is unset and no known socket exists', async () => {
    const probe = await probeContainerRuntime({ HOME: '/nonexistent-home' }, [
      '/nonexistent/docker.sock',
      '/nonexistent/podman.sock',
    ]);
    expect(probe).toMatchObject({
      available: false,
      reason:
        'no container runtime: DOCKER_HOST is unset and no socket exists (/nonexistent/docker.sock, /nonexistent/podman.sock)',
    });
    expect(probe.ms).toBeLessThan(50);
  });

  it('looks for the usual sockets under the HOME and XDG_RUNTIME_DIR it is given', () => {
    expect(candidateSockets({ HOME: '/h', XDG_RUNTIME_DIR: '/run/user/7' })).toEqual([
      '/var/run/docker.sock',
      '/h/.docker/run/docker.sock',
      '/h/.docker/desktop/docker.sock',
      '/h/.colima/default/docker.sock',
      '/h/.rd/docker.sock',
      '/run/user/7/docker.sock',
      '/run/user/7/podman/podman.sock',
    ]);
  });

  it('finds an engine at a socket under the HOME it is given', async () => {
    const socket = await startFakeEngine();
    // The fake engine's folder as HOME, with its socket where Docker Desktop puts one; the
    // machine-wide /var/run/docker.sock is left out, so a real engine cannot answer instead.
    const home = path.join(path.dirname(socket), 'home');
    mkdirSync(path.join(home, '.docker', 'run'), { recursive: true });
    symlinkSync(socket, path.join(home, '.docker', 'run', 'docker.sock'));
    const env = { HOME: home };
    const underHome = candidateSockets(env).filter((s) => s.startsWith(home));
    const probe = await probeContainerRuntime(env, underHome);
    expect(probe).toMatchObject({
      available: true,
      endpoint: `unix://${home}/.docker/run/docker.sock`,
    });
  });

  it('says no when DOCKER_HOST names a socket that does not exist', async () => {
    const probe = await probeContainerRuntime({ DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    expect(probe).toMatchObject({
      available: false,
      reason: expect.stringContaining('/nonexistent/docker.sock'),
    });
    expect(probe.ms).toBeLessThan(1000);
  });

  it('says no when DOCKER_HOST is a TCP address nothing listens on', async () => {
    const probe = await probeContainerRuntime({ DOCKER_HOST: 'tcp://127.0.0.1:1' });
    expect(probe).toMatchObject({
      available: false,
      reason: expect.stringContaining('ECONNREFUSED'),
    });
  });

  it('says yes when an engine answers /_ping on DOCKER_HOST', async () => {
    const socket = await startFakeEngine();
    const probe = await probeContainerRuntime({ DOCKER_HOST: `unix://${socket}` });
    expect(probe).toMatchObject({ available: true, endpoint: `unix://${socket}` });
  });
});

describe('startTestServer()', () => {
  it('refuses an unknown TEST_POSTGRES_PROVIDER, listing the providers', async () => {
    await expect(startTestServer({ TEST_POSTGRES_PROVIDER: 'sqlite' })).rejects.toThrow(
      'TEST_POSTGRES_PROVIDER=sqlite is not a provider; use one of: url, docker, embedded.',
    );
  });

  it('forced to url without TEST_DATABASE_URL, says what it tried and why it failed', async () => {
    await expect(startTestServer({ TEST_POSTGRES_PROVIDER: 'url' })).rejects.toThrow(
      'No PostgreSQL for the tests (TEST_POSTGRES_PROVIDER=url). Tried:\n- url: TEST_DATABASE_URL is not set',
    );
  });

  it('forced to url with an unreachable server, names the error', async () => {
    const error = await startTestServer({
      TEST_POSTGRES_PROVIDER: 'url',
      TEST_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/postgres',
    }).catch((e: Error) => e);
    expect((error as Error).message).toMatch(/Tried:\n- url: .*ECONNREFUSED/);
  });

  it('forced to docker on a machine without a container runtime, fails at once saying so', async () => {
    const started = performance.now();
    const error = await startTestServer({ ...noRuntime, TEST_POSTGRES_PROVIDER: 'docker' }).catch(
      (e: Error) => e,
    );
    expect((error as Error).message).toMatch(
      /^No PostgreSQL for the tests \(TEST_POSTGRES_PROVIDER=docker\)\. Tried:\n- docker: no container runtime answers at unix:\/\/\/nonexistent\/docker\.sock: .*ENOENT.* \(probed in [\d.]+ ms\)$/,
    );
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("forced to docker where an engine answers but cannot run containers, reports testcontainers' error", async () => {
    const socket = await startFakeEngine();
    const error = await startTestServer({
      ...noRuntime,
      DOCKER_HOST: `unix://${socket}`,
      TEST_POSTGRES_PROVIDER: 'docker',
    }).catch((e: Error) => e);
    expect((error as Error).message).toMatch(
      /^No PostgreSQL for the tests \(TEST_POSTGRES_PROVIDER=docker\)\. Tried:\n- docker: /,
    );
    // testcontainers' own detection ran (and found the engine useless), not our probe's "no".
    expect((error as Error).message).toContain(
      'Could not find a working container runtime strategy',
    );
  });

  it('without TEST_DATABASE_URL or a container runtime, falls through to embedded and says why', async () => {
    const server = await startTestServer(noRuntime);
    try {
      expect(server.provider).toBe('embedded');
      expect(server.version).toMatch(/^17\./);
      expect(server.skipped).toEqual([expect.stringMatching(/^docker: no container runtime/)]);
    } finally {
      await server.stop();
    }
  });
});
