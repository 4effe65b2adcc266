/* verify.c: compare a remote leg with the device, region by region, while
 * clients keep writing (replctl verify).
 *
 * Per chunk: the write generations of its regions are noted (vdev_wgen: a
 * logged entry bumps them once it is in the device's index and before any
 * site can apply it), then the device view D is read (local leg +
 * unapplied entries); the newest entry D may contain is X (the last
 * reserved seq after the read).  Once the site has applied every entry up
 * to X, its leg's copy R is read.  R holds D's state plus, maybe, entries
 * the site applied after X; each of those was logged after D was read, so
 * it bumped the generation of the regions it touches.  Where R and D
 * differ and the generations did not move, no write explains it: the
 * region really differs.  Else it was written meanwhile and is checked
 * again later.  (Reading D again and comparing is not enough: a region can
 * go from A to B and back to A, zeroes to data to zeroes, while R is read,
 * and R then holds B.)  The site must stay in log mode with nothing in
 * doubt, and its done_seq must mean what the legs hold: a lost connection
 * or a change of mode moves legs_gen, and the regions are checked again.
 * With mark, differing regions are marked in the leg's dirty log and the
 * site copies them (an in-place resync).
 *
 * Layer 5: calls down only (the device view, leg reads, the site state
 * machine, worker_poke); the instance stops it (replicator_verify_stop).
 * A run's figures are in struct site_verify: set at its start and end
 * under the site's lock, counted with atomic adds while it runs.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "link.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define VERIFY_CHUNK   (8u << 20)        /* bytes read per round, at most */
#define VERIFY_RETRIES 5                 /* a region written meanwhile: check again */

struct verify {
  struct replicator *r;
  struct site *s;
  struct vdev *d;
  struct leg *l;
  bool mark;
  uint8_t *dv, *rv;                     /* device view, remote */
  size_t buflen;
};

/* Wait until the site applied everything up to seq; -1 with a reason. */
static int
wait_applied (struct verify *v, uint64_t seq, char *why, size_t len)
{
  struct site *s = v->s;
  struct timespec until;
  int r = 0;

  until = deadline_ts (mono_ns (), (s->cfg->disconnect_timeout_ms / 1000 + 1) * 1000);
  pthread_mutex_lock (&s->lock);
  s->sync_waiters++;
  while (s->done_seq < seq) {
    if (site_state_is_dirty_log (site_state (s))) {
      snprintf (why, len, "site %u is in dirty-log mode: resync it first", s->id);
      r = -1;
      break;
    }
    if (__atomic_load_n (&s->verify.stop, __ATOMIC_ACQUIRE) || v->r->stop) {
      snprintf (why, len, "stopped");
      r = -1;
      break;
    }
    if (pthread_cond_timedwait (&s->cv, &s->lock, &until) == ETIMEDOUT) {
      snprintf (why, len, "site %u did not apply the log within its disconnect_timeout (%s)",
                s->id, site_paused (s) ? "paused" :
                site_state_is_disconnected (site_state (s)) ? "disconnected" : "slow");
      r = -1;
      break;
    }
  }
  s->sync_waiters--;
  pthread_mutex_unlock (&s->lock);
  return r;
}

static uint64_t
last_reserved (struct replicator *r)
{
  struct replog_stats st;
  replog_get_stats (r->rl, &st);
  return st.next_seq - 1;
}

/* 0 if the site is in log mode with nothing in doubt, else -1 and why:
 * only then is it expected to equal the device. */
static int
verify_site_settled (struct site *s, char *why, size_t len)
{
  enum site_state st = site_state (s);
  const char *what = site_state_is_dirty_log (st) ? "in dirty-log mode" :
    site_state_is_resync (st) ? "resyncing" :
    site_in_doubt (s) ? "holding regions of in-doubt writes" : NULL;

  if (!what)
    return 0;
  snprintf (why, len, "site %u is %s: it is not expected to equal the device until its "
            "resync has finished", s->id, what);
  return -1;
}

/* Compare [off, off + len) (at most 64 regions): 0, or -1 with a reason.
 * Regions written meanwhile are left set in *again (a bit per region of
 * the chunk). */
static int
verify_chunk (struct verify *v, uint64_t off, uint32_t len, uint64_t *again, char *why, size_t wlen)
{
  struct site *s = v->s;
  uint64_t rs = v->l->dirty_log->region_size, x, k, n = (len + rs - 1) / rs, gen, wg[64];
  char err[256] = "";
  int e;

  *again = 0;
  if (verify_site_settled (s, why, wlen) == -1)
    return -1;
  /* Before the device is read: what the legs' state and the writes to
   * each region are now. */
  gen = __atomic_load_n (&s->legs_gen, __ATOMIC_ACQUIRE);
  for (k = 0; k < n; k++)
    wg[k] = vdev_wgen (v->d, off + k * rs, k * rs + rs <= len ? rs : len - k * rs);
  if (rdev_read_view (v->d, v->dv, len, off) == -1) {
    snprintf (why, wlen, "reading the device at %" PRIu64 ": %m", off);
    return -1;
  }
  x = last_reserved (v->r);
  if (wait_applied (v, x, why, wlen) == -1)
    return -1;
  if ((e = leg_pread_any (v->l, v->rv, len, off, err, sizeof err)) != 0) {
    snprintf (why, wlen, "reading the leg at site %u: %s", s->id, err[0] ? err : strerror (-e));
    return -1;
  }
  if (memcmp (v->dv, v->rv, len) == 0) {
    __atomic_add_fetch (&s->verify.checked, n, __ATOMIC_RELAXED);
    return 0;
  }
  /* The site lost a connection (entries re-sent, writes in doubt) or left
   * log mode meanwhile: look again (verify_site_settled says when not to). */
  if (__atomic_load_n (&s->legs_gen, __ATOMIC_ACQUIRE) != gen) {
    for (k = 0; k < n; k++) {
      uint64_t o = k * rs, l = o + rs <= len ? rs : len - o;
      if (memcmp (v->dv + o, v->rv + o, l) != 0)
        *again |= 1ull << k;
      else
        __atomic_add_fetch (&s->verify.checked, 1, __ATOMIC_RELAXED);
    }
    return 0;
  }
  for (k = 0; k < n; k++) {
    uint64_t o = k * rs, l = o + rs <= len ? rs : len - o;
    if (memcmp (v->dv + o, v->rv + o, l) == 0) {
      __atomic_add_fetch (&s->verify.checked, 1, __ATOMIC_RELAXED);
      continue;
    }
    if (vdev_wgen (v->d, off + o, l) != wg[k]) {
      *again |= 1ull << k;                 /* written meanwhile */
      continue;
    }
    __atomic_add_fetch (&s->verify.checked, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch (&s->verify.differing, 1, __ATOMIC_RELAXED);
    rep_warn ("site %u: verify: device '%s' region at %" PRIu64 " (%" PRIu64 " bytes) differs "
              "at the leg%s", s->id, v->d->name, off + o, l, v->mark ? "; marked for resync" : "");
    if (v->mark)
      bitmap_set_range (v->l->dirty_log, off + o, l);
  }
  return 0;
}

static void *
verify_thread (void *arg)
{
  struct verify *v = arg;
  struct site *s = v->s;
  uint64_t rs = v->l->dirty_log->region_size, off, chunk;
  char why[300] = "";
  int r = 0;

  /* Whole regions per round, at most 64 of them (the retry mask). */
  chunk = VERIFY_CHUNK / rs * rs;
  if (chunk > 64 * rs)
    chunk = 64 * rs;
  if (chunk == 0)
    chunk = rs;
  for (off = 0; off < v->d->size && r == 0; off += chunk) {
    uint32_t len = (uint32_t) (off + chunk <= v->d->size ? chunk : v->d->size - off);
    uint64_t again = 0;
    int tries;
    for (tries = 0; r == 0 && (tries == 0 || again); tries++) {
      uint64_t k;
      if (tries == 0) {
        r = verify_chunk (v, off, len, &again, why, sizeof why);
        continue;
      }
      if (tries > VERIFY_RETRIES) {
        /* Written all the time: not checked, said so. */
        __atomic_add_fetch (&s->verify.busy, (uint64_t) __builtin_popcountll (again),
                            __ATOMIC_RELAXED);
        break;
      }
      for (k = 0; k < 64 && r == 0; k++) {
        uint64_t o = k * rs, more;
        if (!(again & (1ull << k)))
          continue;
        again &= ~(1ull << k);
        r = verify_chunk (v, off + o, (uint32_t) (o + rs <= len ? rs : len - o), &more, why, sizeof why);
        if (more)
          again |= 1ull << k;
      }
    }
    if (__atomic_load_n (&s->verify.stop, __ATOMIC_ACQUIRE)) {
      snprintf (why, sizeof why, "stopped");
      r = -1;
    }
  }
  pthread_mutex_lock (&s->lock);
  if (r == 0 && v->mark && s->verify.differing)
    s->resync_now = true;                  /* copy what differs */
  snprintf (s->verify.error, sizeof s->verify.error, "%s", r ? why : "");
  s->verify.finished_ns = mono_ns ();
  __atomic_add_fetch (&s->verify.runs, 1, __ATOMIC_RELAXED);   /* status reads it */
  __atomic_store_n (&s->verify.active, false, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&s->lock);
  if (r == 0 && v->mark && s->verify.differing)
    worker_poke (s);
  if (r)
    rep_warn ("site %u: verify of device '%s' stopped: %s", s->id, v->d->name, why);
  else
    rep_event (EV_VERIFY_FINISHED, (int) s->id, v->d->name, "verify finished: %" PRIu64 " regions "
               "checked, %" PRIu64 " differ, %" PRIu64 " written all the time (not checked)",
               s->verify.checked, s->verify.differing, s->verify.busy);
  free (v->dv);
  free (v->rv);
  free (v);
  return NULL;
}

/* The leg of device at a remote site, or NULL with a reason. */
static struct leg *
verify_leg (struct replicator *r, const char *device, unsigned site, char *why, size_t len)
{
  struct vdev *d;
  struct leg *l = NULL;
  size_t j;

  if (site == 0 || site >= CFG_MAX_SITES || !r->sites[site].cfg) {
    snprintf (why, len, site == 0 ? "site 0 holds the local legs: verify compares a remote "
              "site's leg with the device" : "no site %u in this instance", site);
    return NULL;
  }
  if (!(d = replicator_find (r, device))) {
    snprintf (why, len, "no device '%s' in this instance", device);
    return NULL;
  }
  for (j = 0; j < d->nlegs; j++)
    if (d->legs[j].site == site)
      l = &d->legs[j];
  if (!l)
    snprintf (why, len, "device '%s' has no leg at site %u", device, site);
  return l;
}

int
replicator_verify (struct replicator *r, const char *device, unsigned site, bool mark,
                   char *why, size_t len)
{
  struct site *s;
  struct vdev *d;
  struct leg *l;
  struct verify *v;
  int e;

  if (!(l = verify_leg (r, device, site, why, len)))
    return -1;
  s = &r->sites[site];
  d = l->dev;
  if (verify_site_settled (s, why, len) == -1)
    return -1;
  pthread_mutex_lock (&s->lock);
  if (s->verify.active) {
    pthread_mutex_unlock (&s->lock);
    snprintf (why, len, "a verify of site %u is running already", site);
    return -1;
  }
  if (s->verify.thread_started) {
    pthread_join (s->verify.thread, NULL);  /* the previous one has finished */
    s->verify.thread_started = false;
  }
  v = calloc (1, sizeof *v);
  if (v)                               /* a chunk is at least one region */
    v->buflen = l->dirty_log->region_size > VERIFY_CHUNK ? l->dirty_log->region_size : VERIFY_CHUNK;
  if (!v || posix_memalign ((void **) &v->dv, 4096, v->buflen) != 0 ||
      posix_memalign ((void **) &v->rv, 4096, v->buflen) != 0) {
    pthread_mutex_unlock (&s->lock);
    if (v) {
      free (v->dv);
      free (v->rv);
      free (v);
    }
    snprintf (why, len, "out of memory");
    return -1;
  }
  v->r = r;
  v->s = s;
  v->d = d;
  v->l = l;
  v->mark = mark;
  s->verify.active = true;
  s->verify.stop = false;
  s->verify.dev = d->index;
  s->verify.mark = mark;
  s->verify.total = l->dirty_log->nbits;
  s->verify.checked = s->verify.differing = s->verify.busy = 0;
  s->verify.error[0] = 0;
  s->verify.started_ns = mono_ns ();
  if ((e = pthread_create (&s->verify.thread, NULL, verify_thread, v)) != 0) {
    s->verify.active = false;
    pthread_mutex_unlock (&s->lock);
    free (v->dv);
    free (v->rv);
    free (v);
    snprintf (why, len, "cannot start a thread: %s", strerror (e));
    return -1;
  }
  s->verify.thread_started = true;
  pthread_mutex_unlock (&s->lock);
  rep_info ("site %u: verify of device '%s' started (%" PRIu64 " regions%s)", site, device,
            s->verify.total, mark ? ", differing ones are marked for resync" : "");
  return 0;
}

void
replicator_verify_stop (struct replicator *r)
{
  unsigned i;
  for (i = 1; i < CFG_MAX_SITES; i++) {
    struct site *s = &r->sites[i];
    if (!s->verify.thread_started)
      continue;
    __atomic_store_n (&s->verify.stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock (&s->lock);
    pthread_cond_broadcast (&s->cv);
    pthread_mutex_unlock (&s->lock);
    pthread_join (s->verify.thread, NULL);
    s->verify.thread_started = false;
  }
}
