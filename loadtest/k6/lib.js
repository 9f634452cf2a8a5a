// Shared by the k6 profiles: one POST /completion per iteration, the metrics
// the thresholds read, and the thresholds themselves in two groups:
//
//   correctness  always on; fails the run when the gateway misbehaves, never
//                because the machine is slow: `errors` rate == 0, where an
//                error is any answer but a 200 or a 503/429 WITH Retry-After
//                (connection errors and timeouts, 4xx, 5xx other than 503,
//                a refusal without Retry-After);
//   speed        latency and shed-share targets of a real run; dropped with
//                -e SPEED=0 (the CI smoke, where a debug build on a shared
//                machine sets the pace).
//
//   BASE_URL   gateway address (default http://127.0.0.1:8080)
//   N_PREDICT  tokens to generate (default 32)
//   DEADLINE   x-sluice-deadline: how long a request may wait at the gateway (default 2s)
//   STREAM     "1": ask for SSE (the duration then covers the whole stream)
//   SPEED      "0": correctness thresholds only
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend, Counter } from 'k6/metrics';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const N_PREDICT = parseInt(__ENV.N_PREDICT || '32', 10);
const DEADLINE = __ENV.DEADLINE || '2s';
const STREAM = __ENV.STREAM === '1';
const SPEED = __ENV.SPEED !== '0';

// Hard errors: anything but a 200 or a shed answer (503/429 with Retry-After).
export const errors = new Rate('errors');
// The same errors by kind (read them in the summary when `errors` fails).
const errConnection = new Counter('errors_connection'); // status 0: refused, reset, timed out
const errClient = new Counter('errors_4xx'); // 4xx other than 429
const errServer = new Counter('errors_5xx_not_503'); // 500, 502, 504, ...
const errNoRetryAfter = new Counter('errors_shed_without_retry_after'); // 503/429 lacking Retry-After
const errOther = new Counter('errors_other_status'); // 1xx/2xx other than 200, 3xx
// Share of all answers that were shed (503/429).
export const shed = new Rate('shed');
// Among shed answers: share that carried Retry-After (must be all of them).
export const shedWithRetryAfter = new Rate('shed_with_retry_after');
// Time to a shed answer (Sluice answers at once; a queue timeout does not).
export const timeToReject = new Trend('time_to_reject', true);
export const served = new Counter('served');

// 503 and 429 are expected answers under overload: keep them out of
// http_req_failed and out of the latency of served requests.
http.setResponseCallback(http.expectedStatuses(200));

export function completion() {
  const body = JSON.stringify({ prompt: 'Hello', n_predict: N_PREDICT, stream: STREAM });
  const res = http.post(`${BASE_URL}/completion`, body, {
    headers: { 'Content-Type': 'application/json', 'x-sluice-deadline': DEADLINE },
    timeout: '60s',
    tags: { name: 'completion' },
  });
  const isShed = res.status === 503 || res.status === 429;
  const hasRetryAfter = res.headers['Retry-After'] !== undefined;
  shed.add(isShed);
  if (isShed) {
    shedWithRetryAfter.add(hasRetryAfter);
    timeToReject.add(res.timings.duration);
  }
  if (res.status === 200) served.add(1);
  const bad = !(res.status === 200 || (isShed && hasRetryAfter));
  errors.add(bad);
  if (bad) {
    if (res.status === 0) errConnection.add(1);
    else if (isShed) errNoRetryAfter.add(1);
    else if (res.status >= 500) errServer.add(1);
    else if (res.status >= 400) errClient.add(1);
    else errOther.add(1);
  }
  check(res, {
    'status is 200 or shed': (r) => r.status === 200 || isShed,
    'shed answers carry Retry-After': () => !isShed || hasRetryAfter,
  });
  return res;
}

// Latency of served requests only: http_req_duration{expected_response:true}.
export const SERVED_P95 = 'http_req_duration{expected_response:true}';

// A profile's thresholds: the correctness ones plus its `speed` ones (unless SPEED=0).
// `errors` gets a sample per answer, so its threshold is always evaluated.
export function thresholds(speed) {
  const t = { errors: ['rate==0'] };
  return SPEED ? Object.assign(t, speed) : t;
}
