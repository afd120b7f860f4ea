// The status snapshot's record of rejections (src/gateway/control/snapshot.ts):
// counters by reason and a fixed ring of the last RECENT_REJECTIONS, oldest
// first, dated when they happened. The ring keeps numbers and formats dates
// only when asked (every junk datagram of a flood passes through note()).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RECENT_REJECTIONS, RejectionRecord } from '../src/gateway/control/snapshot.js';

afterEach(() => { vi.useRealTimers(); });

describe('RejectionRecord', () => {
  it('keeps the last rejections in order with the time each happened, and counts them all by reason', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.UTC(2026, 11, 2, 0, 0, 0));
    const r = new RejectionRecord();
    expect(r.recent()).toEqual([]);
    r.note('198.51.100.9', 'bad_hmac', 'main');
    expect(r.recent()).toEqual([{ time: '2026-12-02T00:00:00.000Z', src: '198.51.100.9', reason: 'bad_hmac', rule: 'main' }]);
    for (let i = 0; i < RECENT_REJECTIONS + 5; i++) {
      vi.setSystemTime(Date.UTC(2026, 11, 2, 0, 0, i + 1));
      r.note(`198.51.100.${i + 10}`, i % 2 ? 'too_short' : 'bad_hmac');
    }
    const recent = r.recent();
    expect(recent).toHaveLength(RECENT_REJECTIONS);
    expect(recent[0]).toEqual({ time: '2026-12-02T00:00:06.000Z', src: '198.51.100.15', reason: 'too_short' });
    expect(recent.at(-1)).toEqual({ time: `2026-12-02T00:00:${String(RECENT_REJECTIONS + 5).padStart(2, '0')}.000Z`, src: `198.51.100.${RECENT_REJECTIONS + 14}`, reason: 'bad_hmac' });
    expect(recent.map((x) => x.time)).toEqual([...recent.map((x) => x.time)].sort());
    expect(r.byReason.get('bad_hmac')).toBe(1 + Math.ceil((RECENT_REJECTIONS + 5) / 2));
    expect(r.byReason.get('too_short')).toBe(Math.floor((RECENT_REJECTIONS + 5) / 2));
    // What recent() returns is a copy: changing it changes nothing kept.
    recent.length = 0;
    expect(r.recent()).toHaveLength(RECENT_REJECTIONS);
  });
});
