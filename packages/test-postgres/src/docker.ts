export interface DockerServer {
  url: string;
  image: string;
  stop: () => Promise<void>;
}

/**
 * PostgreSQL in a container through @testcontainers/postgresql (11.x: 12.x crashes on
 * import under Node 20). Data on a tmpfs and durability off, as for the embedded server.
 * If the run dies, testcontainers' reaper (Ryuk) removes the container.
 */
export async function startDockerPostgres(image: string): Promise<DockerServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(image)
    .withDatabase('postgres')
    .withUsername('postgres')
    .withPassword('postgres')
    .withTmpFs({ '/var/lib/postgresql/data': 'rw' })
    .withCommand([
      'postgres',
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
    ])
    .start();
  return {
    url: container.getConnectionUri(),
    image,
    stop: async () => {
      await container.stop();
    },
  };
}
