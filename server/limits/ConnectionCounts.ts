/** Open sockets per client address and per user: in this process, or across gateways (RedisConnectionCounts). */
export interface ConnectionCounts {
  /** Sockets open now for this address and for this user. Rejects when the counts cannot be read (the caller refuses: fail closed). */
  count(ip: string, userId: string): Promise<{ readonly byIp: number; readonly byUser: number }>;
  /** A socket opened; `connectionId` is unique in this process. Never throws. */
  opened(connectionId: string, ip: string, userId: string): void;
  /** The socket opened with these values closed. Never throws. */
  closed(connectionId: string, ip: string, userId: string): void;
  /** Stops background work and forgets this process's sockets; safe to call twice. */
  close(): Promise<void>;
}
