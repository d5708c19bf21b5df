import type pg from 'pg';

/**
 * Runs `work` in one transaction on one connection of `pool`: committed when it resolves, rolled
 * back when it rejects (and the rejection passed on). The connection goes back to the pool either
 * way; one whose rollback failed is destroyed rather than reused.
 */
export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: unknown) => {
      broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
    });
    throw error;
  } finally {
    client.release(broken);
  }
}
