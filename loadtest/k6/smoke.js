// k6 smoke: 1 VU, ITERATIONS (default 10) requests in sequence; every one
// must be served (one request at a time never fills the fleet, so a shed
// answer is a misbehaviour here, whatever the machine's speed).
//   k6 run loadtest/k6/smoke.js   (BASE_URL=http://host:port)
import { completion, thresholds, SERVED_P95 } from './lib.js';

export const options = {
  vus: 1,
  iterations: parseInt(__ENV.ITERATIONS || '10', 10),
  thresholds: Object.assign(thresholds({ [SERVED_P95]: ['p(95)<2000'] }), { shed: ['rate==0'] }),
};

export default function () {
  completion();
}
