// The cluster's word on a packet the local pipeline would grant (docs/cluster.md):
// the shared burn of its digest, and what on_unavailable makes of a Redis that
// does not answer in time. Pure policy over SharedReplay; the daemon calls it in
// a few lines between the pipeline's decision and acting on it, so only packets
// that passed the HMAC and the local replay store pay the round trip.
import type { ClusterConfig, GatewayConfig } from '../config/model.js';
import { replayTtlMs, SharedReplay, type ClusterNote } from './shared-replay.js';

export type GateVerdict =
  | { ok: true; unshared: boolean }
  | { ok: false; reason: 'replay' | 'cluster_unavailable'; detail: string };

export class ClusterGate {
  private readonly replay: SharedReplay;
  private ttlMs: number;

  constructor(private readonly cfg: ClusterConfig, gw: Pick<GatewayConfig, 'maxPacketAgeSec' | 'replayRetentionSec'>, note: ClusterNote, replay?: SharedReplay) {
    this.replay = replay ?? new SharedReplay(cfg, note);
    this.ttlMs = replayTtlMs(gw.maxPacketAgeSec, gw.replayRetentionSec ?? 86_400);
  }

  setWindow(gw: Pick<GatewayConfig, 'maxPacketAgeSec' | 'replayRetentionSec'>): void {
    this.ttlMs = replayTtlMs(gw.maxPacketAgeSec, gw.replayRetentionSec ?? 86_400);
  }

  async check(digest: string): Promise<GateVerdict> {
    const outcome = await this.replay.burn(digest, this.ttlMs);
    if (outcome === 'fresh') {
      this.replay.remember(digest, this.ttlMs);
      return { ok: true, unshared: false };
    }
    if (outcome === 'used') return { ok: false, reason: 'replay', detail: 'this packet was already used (at a gateway of the cluster)' };
    // Burned locally either way: written to Redis once it is back, so no other gateway takes it later.
    this.replay.remember(digest, this.ttlMs);
    if (this.cfg.onUnavailable === 'local') return { ok: true, unshared: true };
    return { ok: false, reason: 'cluster_unavailable', detail: `Redis did not answer within ${this.cfg.timeoutMs} ms and on_unavailable is refuse; knock again once it is back` };
  }

  get connection() {
    return this.replay.connection;
  }

  ping() {
    return this.replay.ping();
  }

  close(): void {
    this.replay.close();
  }
}
