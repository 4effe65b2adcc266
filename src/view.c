/* view.c: the device view (layer 3): a device's content as a client reads
 * it.
 *
 * Owns: reads of a device (the overlay of entries not yet on the leg reads
 * go through, then that leg: the local leg, or a remote site's while the
 * local leg is out of service), holes of the device, resetting the
 * overlay for a new read site, choosing a read site, the write
 * generations verify compares, and finding a device by name.
 * Invariants: the overlay is walked and the read site taken under
 * d->ov_lock, then the gaps are read from that leg after it is released
 * (an entry missing from the overlay was applied to that leg before the
 * walk).  Calls down only: leg.c, site.c (state), the overlay, the log;
 * a worker is woken through r->poke (registered by the instance).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replicator.h"
#include "report.h"

struct leg *
vdev_leg_at (struct vdev *d, unsigned site)
{
  size_t j;
  for (j = 0; j < d->nlegs && site; j++)
    if (d->legs[j].site == site)
      return &d->legs[j];
  return NULL;
}

struct gaps {
  uint64_t start, end;          /* request range */
  uint64_t cursor;              /* covered up to here */
  uint8_t *buf;
  uint64_t (*v)[2];
  size_t n, cap;
  uint64_t inline_v[16][2];
  int err;
};

static void
add_gap (struct gaps *g, uint64_t s, uint64_t e)
{
  if (g->n == g->cap) {
    size_t cap = g->cap * 2;
    uint64_t (*v)[2] = g->v == g->inline_v ? malloc (cap * sizeof *v) : realloc (g->v, cap * sizeof *v);
    if (!v) {
      g->err = ENOMEM;
      return;
    }
    if (g->v == g->inline_v)
      memcpy (v, g->inline_v, sizeof g->inline_v);
    g->v = v;
    g->cap = cap;
  }
  g->v[g->n][0] = s;
  g->v[g->n][1] = e;
  g->n++;
}

static void
copy_piece (const struct ov_piece *p, void *opaque)
{
  struct gaps *g = opaque;
  uint64_t s = p->start > g->start ? p->start : g->start;
  uint64_t e = p->end < g->end ? p->end : g->end;

  if (s > g->cursor)
    add_gap (g, g->cursor, s);
  if (p->kind == OV_DATA)
    memcpy (g->buf + (s - g->start), p->src + (s - p->eoff), e - s);
  else
    memset (g->buf + (s - g->start), 0, e - s);
  g->cursor = e;
}

/* The first half of a read of the device view: what unapplied entries
 * hold over [offset, offset + count) goes into buf (under the overlay
 * lock, so the log bytes stay put while copied); g gets the ranges to read
 * from the leg reads go through afterwards (anything missing from the
 * overlay was applied before we looked), *out and *read_site which leg
 * that is.  Free g->v if it is not g->inline_v. */
static void
view_walk (struct vdev *d, void *buf, uint32_t count, uint64_t offset, struct gaps *g,
           bool *out, unsigned *read_site)
{
  *g = (struct gaps) { .start = offset, .end = offset + count, .cursor = offset, .buf = buf,
                       .cap = 16 };
  g->v = g->inline_v;
  pthread_mutex_lock (&d->ov_lock);
  overlay_foreach (d->ov, g->start, g->end, copy_piece, g);
  *out = d->local_out;
  *read_site = d->read_site;
  pthread_mutex_unlock (&d->ov_lock);
  if (g->cursor < g->end)
    add_gap (g, g->cursor, g->end);
}

/* Wait (polls of 10 ms, at most n) until a remote site is d's read site
 * (its local leg out of service): 0, or -1. */
static int
wait_read_site (struct vdev *d, uint64_t n)
{
  uint64_t i;
  for (i = 0; i < n; i++) {
    if (__atomic_load_n (&d->local_out, __ATOMIC_ACQUIRE) &&
        __atomic_load_n (&d->read_site, __ATOMIC_ACQUIRE))
      return 0;
    usleep (10000);
  }
  return -1;
}

/* The local leg of d failed a read: with a remote site up to date, site 0
 * takes the leg out of service (as after a failed write) and that site
 * becomes the read site.  Waits for that, at most site 0's
 * disconnect_timeout (5 s at most); 0 once a remote site is the read site. */
static int
local_read_failed (struct vdev *d)
{
  struct site *s0 = &d->r->sites[0];
  uint64_t ms = s0->cfg->disconnect_timeout_ms < 5000 ? s0->cfg->disconnect_timeout_ms : 5000;
  uint64_t n = ms / 10 + 1;              /* a read waits briefly, whatever the timeout */

  __atomic_add_fetch (&d->local->errors, 1, __ATOMIC_RELAXED);
  if (!vdev_pick_read_site (d))
    return -1;                           /* the leg holds the only copy */
  __atomic_fetch_or (&s0->fail_req, 1u << d->index, __ATOMIC_ACQ_REL);
  d->r->poke (s0);
  return wait_read_site (d, n);
}

/* The device's content (leg + unapplied entries), without counting it as a
 * client read. */
int
rdev_read_view (struct vdev *d, void *buf, uint32_t count, uint64_t offset)
{
  struct gaps g;
  size_t i;
  int r = 0;
  bool out, local_failed = false;
  unsigned read_site;

  if (offset > d->size || count > d->size - offset) {
    errno = EINVAL;
    rep_error ("device '%s': read beyond the end", d->name);
    return -1;
  }
  view_walk (d, buf, count, offset, &g, &out, &read_site);
  if (g.err) {
    errno = g.err;
    rep_error ("device '%s': read: %m", d->name);
    r = -1;
  }
  if (r == 0 && g.n && out && !read_site && vdev_pick_read_site (d)) {
    /* The local leg was just taken out of service and a remote site is
     * taking over (asynchronously, in its worker): wait for it rather than
     * fail the read (guarantee 6). */
    uint64_t ms = d->r->sites[0].cfg->disconnect_timeout_ms;
    if (wait_read_site (d, (ms < 5000 ? ms : 5000) / 10 + 1) == 0) {
      if (g.v != g.inline_v)
        free (g.v);
      return rdev_read_view (d, buf, count, offset);
    }
  }
  if (r == 0 && g.n && out) {
    /* The local leg is out of service: the read site's leg. */
    struct leg *src = vdev_leg_at (d, read_site);
    char err[256];
    for (i = 0; r == 0 && i < g.n; i++) {
      int e = src ? leg_pread_any (src, (uint8_t *) buf + (g.v[i][0] - offset),
                                   (uint32_t) (g.v[i][1] - g.v[i][0]), g.v[i][0], err, sizeof err)
                  : -EIO;
      if (e) {
        errno = -e;
        if (src)
          rep_error ("device '%s': reading through site %u (the local leg is out of service): %s",
                     d->name, read_site, err);
        else
          rep_error ("device '%s': read: the local leg is out of service and no remote site "
                     "is up to date to read from", d->name);
        r = -1;
      }
    }
  }
  for (i = 0; r == 0 && !out && i < g.n; i++) {
    if (leg_read (d->local, (uint8_t *) buf + (g.v[i][0] - offset),
                  (uint32_t) (g.v[i][1] - g.v[i][0]), g.v[i][0]) == -1) {
      rep_error ("device '%s': reading local leg %s: %m", d->name, d->local->cfg->path);
      r = -1;
      local_failed = true;
    }
  }
  if (g.v != g.inline_v)
    free (g.v);
  if (local_failed && local_read_failed (d) == 0)
    return rdev_read_view (d, buf, count, offset);   /* through the read site now */
  if (local_failed)
    errno = EIO;
  return r;
}

int
rdev_view_overlay (struct vdev *d, void *buf, uint32_t count, uint64_t offset,
                   uint64_t (*gaps)[2], unsigned max, unsigned *n)
{
  struct gaps g;
  bool out;
  unsigned read_site;
  size_t i;

  view_walk (d, buf, count, offset, &g, &out, &read_site);
  if (out || g.err || g.n > max) {
    if (g.v != g.inline_v)
      free (g.v);
    errno = out ? ENODEV : g.err ? g.err : E2BIG;
    return -1;
  }
  for (i = 0; i < g.n; i++) {
    gaps[i][0] = g.v[i][0];
    gaps[i][1] = g.v[i][1];
  }
  *n = (unsigned) g.n;
  if (g.v != g.inline_v)
    free (g.v);
  return 0;
}

static void
note_piece (const struct ov_piece *p, void *opaque)
{
  (void) p;
  *(bool *) opaque = true;
}

uint64_t
rdev_hole_end (struct vdev *d, uint64_t off, uint64_t len)
{
  bool any = false, out;
  unsigned read_site;
  struct leg *src;

  if (off >= d->size)
    return off;
  if (len > d->size - off)
    len = d->size - off;
  /* Same order as a read: the overlay, then the leg. */
  pthread_mutex_lock (&d->ov_lock);
  overlay_foreach (d->ov, off, off + len, note_piece, &any);
  out = d->local_out;
  read_site = d->read_site;
  pthread_mutex_unlock (&d->ov_lock);
  if (any)
    return off;
  src = out ? vdev_leg_at (d, read_site) : d->local;
  return src ? leg_hole_end (src, off, len) : off;
}

void
vdev_wgen_bump (struct vdev *d, uint64_t off, uint64_t len)
{
  uint64_t g, first = off / VDEV_WGEN_GRAIN, last = (off + len - 1) / VDEV_WGEN_GRAIN;

  if (len == 0)
    return;
  if (last - first >= VDEV_WGEN_SLOTS) {
    first = 0;
    last = VDEV_WGEN_SLOTS - 1;
  }
  for (g = first; g <= last; g++)
    __atomic_add_fetch (&d->wgen[g % VDEV_WGEN_SLOTS], 1, __ATOMIC_SEQ_CST);
}

uint64_t
vdev_wgen (struct vdev *d, uint64_t off, uint64_t len)
{
  uint64_t g, first = off / VDEV_WGEN_GRAIN, last = (off + len - 1) / VDEV_WGEN_GRAIN, sum = 0;

  if (len == 0)
    return 0;
  if (last - first >= VDEV_WGEN_SLOTS) {
    first = 0;
    last = VDEV_WGEN_SLOTS - 1;
  }
  for (g = first; g <= last; g++)
    sum += __atomic_load_n (&d->wgen[g % VDEV_WGEN_SLOTS], __ATOMIC_SEQ_CST);
  return sum;
}

struct carry {
  struct overlay *to;
  uint64_t after;
  bool (*on_leg) (void *, uint64_t);
  void *opaque;
  int err;
};

static void
carry_piece (const struct ov_piece *p, void *opaque)
{
  struct carry *c = opaque;
  if (p->seq > c->after && !c->err && !(c->on_leg && c->on_leg (c->opaque, p->seq)) &&
      overlay_insert (c->to, p->start, p->end, p->seq, p->kind,
                      p->src ? p->src + (p->start - p->eoff) : NULL) == -1)
    c->err = errno;
}

int
vdev_overlay_reset (struct vdev *d, uint64_t after, bool (*on_leg) (void *, uint64_t),
                    void *opaque)
{
  struct overlay *nov = overlay_new ();
  struct carry c = { .to = nov, .after = after, .on_leg = on_leg, .opaque = opaque };
  struct replog_stats st;
  uint64_t seq;

  if (!nov)
    return -1;
  /* What the index has after `after` (including entries of writers that
   * are not committed yet), plus every committed entry after it. */
  overlay_foreach (d->ov, 0, UINT64_MAX, carry_piece, &c);
  replog_get_stats (d->r->rl, &st);
  for (seq = after + 1; !c.err && seq <= st.committed_seq; seq++) {
    const struct rl_desc *e = replog_desc (d->r->rl, seq);
    if (e->seq != seq || e->op == RL_OP_BARRIER || e->device != d->index ||
        (on_leg && on_leg (opaque, seq)))
      continue;
    if (overlay_insert (nov, e->offset, e->offset + e->length, seq,
                        e->op == RL_OP_WRITE ? OV_DATA : OV_ZERO,
                        e->op == RL_OP_WRITE ? replog_payload (d->r->rl, e) : NULL) == -1)
      c.err = errno;
  }
  if (c.err) {
    overlay_free (nov);
    errno = c.err;
    return -1;
  }
  overlay_free (d->ov);
  d->ov = nov;
  return 0;
}

unsigned
vdev_pick_read_site (struct vdev *d)
{
  struct replicator *r = d->r;
  unsigned best = 0;
  uint64_t best_done = 0;
  size_t j;

  for (j = 0; j < d->nlegs; j++) {
    struct site *s = &r->sites[d->legs[j].site];
    uint64_t done;
    enum site_state st = site_state (s);
    if (s->id == 0 || !s->running || site_state_is_dirty_log (st) || site_state_is_resync (st) ||
        site_in_doubt (s))
      continue;
    pthread_mutex_lock (&s->lock);
    done = __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED);
    pthread_mutex_unlock (&s->lock);
    if (!best || done > best_done ||
        (done == best_done && !site_state_is_disconnected (site_state (s)))) {
      best = s->id;
      best_done = done;
    }
  }
  return best;
}

struct vdev *
replicator_find (struct replicator *r, const char *name)
{
  size_t i;
  if (!name || !*name)
    return &r->devs[0];
  for (i = 0; i < r->ndevs; i++)
    if (!strcmp (r->devs[i].name, name))
      return &r->devs[i];
  return NULL;
}

