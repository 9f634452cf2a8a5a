// k6 spike: baseline arrival rate (BASE, default 5/s), a jump to PEAK
// (default 100/s) within 5 s, held 20 s, then back. Shedding during the
// spike is expected and must be well-formed; errors are not.
import { completion, SERVED_P95 } from './lib.js';

const BASE = parseInt(__ENV.BASE || '5', 10);
const PEAK = parseInt(__ENV.PEAK || '100', 10);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE,
      timeUnit: '1s',
      preAllocatedVUs: 100,
      maxVUs: 800,
      stages: [
        { target: BASE, duration: '20s' },
        { target: PEAK, duration: '5s' },
        { target: PEAK, duration: '20s' },
        { target: BASE, duration: '5s' },
        { target: BASE, duration: '30s' },
      ],
    },
  },
  thresholds: {
    errors: ['rate<0.01'],
    shed_with_retry_after: ['rate>0.99'],
    time_to_reject: ['p(99)<250'],
    [SERVED_P95]: [`p(95)<${__ENV.P95_MS || 3000}`],
  },
};

export default function () {
  completion();
}
