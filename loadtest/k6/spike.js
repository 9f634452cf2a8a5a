// k6 spike: baseline arrival rate (BASE, default 5/s), a jump to PEAK
// (default 100/s) within RAMP_S (5) s, held HOLD_S (20) s, then back, with
// BASE_S (20) s of baseline before and TAIL_S (30) s after. Shedding during
// the spike is expected and must be well-formed; errors are not.
import { completion, thresholds, SERVED_P95 } from './lib.js';

const BASE = parseInt(__ENV.BASE || '5', 10);
const PEAK = parseInt(__ENV.PEAK || '100', 10);
const secs = (name, dflt) => `${parseInt(__ENV[name] || dflt, 10)}s`;

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE,
      timeUnit: '1s',
      preAllocatedVUs: 100,
      maxVUs: 800,
      stages: [
        { target: BASE, duration: secs('BASE_S', 20) },
        { target: PEAK, duration: secs('RAMP_S', 5) },
        { target: PEAK, duration: secs('HOLD_S', 20) },
        { target: BASE, duration: secs('RAMP_S', 5) },
        { target: BASE, duration: secs('TAIL_S', 30) },
      ],
    },
  },
  thresholds: thresholds({
    time_to_reject: ['p(99)<250'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 3000}`],
  }),
};

export default function () {
  completion();
}
