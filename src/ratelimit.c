/* ratelimit.c: a token bucket and a throughput meter (ratelimit.h).
 *
 * Owns: nothing but the two structs' arithmetic.
 * Invariants: a bucket never holds more than its burst; it is credited
 * exactly rate x elapsed time (the fraction of a byte a refill leaves is
 * carried to the next), so no drift either way however often it is
 * asked.
 * May call: nothing (layer 0).
 */
#include <config.h>

#include <stdint.h>

#include "ratelimit.h"

#define NS 1000000000u

uint64_t
ratelimit_burst_for (uint64_t rate, uint64_t min_burst)
{
  uint64_t b = rate / 4;
  return b > min_burst ? b : min_burst;
}

void
ratelimit_init (struct ratelimit *rl, uint64_t rate, uint64_t burst, uint64_t now)
{
  rl->rate = rate;
  rl->burst = burst > INT64_MAX / 4 ? INT64_MAX / 4 : burst;
  rl->level = (int64_t) rl->burst;
  rl->last_ns = now;
  rl->carry = 0;
}

static void
refill (struct ratelimit *rl, uint64_t now)
{
  unsigned __int128 units, add;
  uint64_t room;

  if (now <= rl->last_ns)
    return;
  units = (unsigned __int128) (now - rl->last_ns) * rl->rate + rl->carry;
  add = units / NS;
  rl->last_ns = now;
  room = (uint64_t) ((int64_t) rl->burst - rl->level);   /* no wrap: burst <= max/4,
                                                            level >= -max/2 */
  if (rl->level >= (int64_t) rl->burst || add >= room) {
    rl->level = (int64_t) rl->burst;
    rl->carry = 0;
    return;
  }
  rl->level += (int64_t) add;
  rl->carry = (uint64_t) (units % NS);           /* nothing lost to rounding */
}

/* Nanoseconds until the bucket holds need bytes (level < need). */
static uint64_t
wait_for (const struct ratelimit *rl, int64_t need)
{
  unsigned __int128 units = (unsigned __int128) (uint64_t) (need - rl->level) * NS - rl->carry;
  unsigned __int128 ns = (units + rl->rate - 1) / rl->rate;
  return ns > UINT64_MAX ? UINT64_MAX : ns ? (uint64_t) ns : 1;
}

uint64_t
ratelimit_take (struct ratelimit *rl, uint64_t cost, uint64_t now)
{
  int64_t need;

  if (!rl->rate)
    return 0;
  refill (rl, now);
  need = (int64_t) (cost < rl->burst ? cost : rl->burst);
  if (rl->level < need)
    return wait_for (rl, need);
  ratelimit_charge (rl, cost);
  return 0;
}

bool
ratelimit_ready (struct ratelimit *rl, uint64_t now, uint64_t *wait_ns)
{
  if (!rl->rate)
    return true;
  refill (rl, now);
  if (rl->level > 0)
    return true;
  *wait_ns = wait_for (rl, 1);
  return false;
}

void
ratelimit_charge (struct ratelimit *rl, uint64_t cost)
{
  const int64_t lowest = -(INT64_MAX / 2);

  if (!rl->rate)
    return;
  /* Debt is bounded by the largest single cost; keep it far from wrapping. */
  if (cost > (uint64_t) INT64_MAX / 2)
    cost = (uint64_t) INT64_MAX / 2;
  rl->level = rl->level - lowest < (int64_t) cost ? lowest : rl->level - (int64_t) cost;
}

/* ---- the meter ---------------------------------------------------------- */

void
ratemeter_init (struct ratemeter *m, uint64_t window_ns, uint64_t now, uint64_t total)
{
  m->window_ns = window_ns;
  m->first = 0;
  m->n = 1;
  m->t[0] = now;
  m->v[0] = total;
}

uint64_t
ratemeter_update (struct ratemeter *m, uint64_t now, uint64_t total)
{
  uint64_t step = m->window_ns / (RATEMETER_SAMPLES - 1);
  unsigned last = (m->first + m->n - 1) % RATEMETER_SAMPLES, second;
  uint64_t dt, dv;

  if (now >= m->t[last] + step) {
    if (m->n == RATEMETER_SAMPLES) {
      m->first = (m->first + 1) % RATEMETER_SAMPLES;
      m->n--;
    }
    last = (m->first + m->n) % RATEMETER_SAMPLES;
    m->t[last] = now;
    m->v[last] = total;
    m->n++;
  }
  /* The oldest sample is the newest one at least a window old. */
  while (m->n >= 2) {
    second = (m->first + 1) % RATEMETER_SAMPLES;
    if (now < m->t[second] + m->window_ns)
      break;
    m->first = second;
    m->n--;
  }
  dt = now > m->t[m->first] ? now - m->t[m->first] : 0;
  dv = total > m->v[m->first] ? total - m->v[m->first] : 0;
  if (dt < NS / 1000)
    return 0;
  return (uint64_t) ((unsigned __int128) dv * NS / dt);
}
