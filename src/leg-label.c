/* leg-label.c: the labels of this instance's legs (layer 3, beside leg.c;
 * safety rule 15).
 *
 * Owns: where each leg's label lives (the end of the leg, a label file or
 * none), reading it when a path leg is opened and when a remote connects
 * (the connector's check hook, on the new connection before the worker
 * has it), what the label says against this instance's identity
 * (label.c's classes) and what follows:
 *   - new (blank area): labelled; copied in full unless its site is new
 *     and trusted (or the log had no identity yet: an upgrade);
 *   - ours: continue as today;
 *   - an older generation of ours: labelled, copied in full (a handover
 *     at exactly the end of that generation copies nothing);
 *   - another group or device, data where the label goes, a newer
 *     generation (this instance was failed over) or split brain: refused,
 *     never written;
 * the identity a new log adopts from its local legs (takeover and
 * switchover), and label writes (attach, clean stop).
 * Invariant: no leg whose label is not ours is ever written: a refused
 * remote connection is closed before the worker sees it; a refused path
 * leg stops the start.
 * Calls down only: label.c, links (rreader, the ops of a new connection),
 * replog (identity), events, reports.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap.h"
#include "event.h"
#include "io.h"
#include "leg-label.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define LABEL_IO_TIMEOUT_NS (UINT64_C(5) * 1000000000)

/* ---- I/O: a path leg, a new connection, a reader connection ---- */

static int
fd_pread (void *o, void *buf, uint32_t len, uint64_t off)
{
  int fd = *(int *) o;
  ssize_t n = pread (fd, buf, len, (off_t) off);
  if (n == (ssize_t) len)
    return 0;
  return n < 0 ? -errno : -EIO;
}

static int
fd_pwrite (void *o, const void *buf, uint32_t len, uint64_t off)
{
  int fd = *(int *) o;
  ssize_t n;

  pft_write (fd, buf, len, off);         /* power-loss trace: may land in part */
  n = pwrite (fd, buf, len, (off_t) off);
  if (n == (ssize_t) len)
    return 0;
  return n < 0 ? -errno : -EIO;
}

static int
fd_flush (void *o)
{
  int fd = *(int *) o;
  pft_sync (fd, 'S');
  if (fdatasync (fd) == -1)
    return -errno;
  pft_sync (fd, 'D');
  return 0;
}

struct conn_io {
  void *conn;
  const struct link_ops *ops;
};

static int
conn_pread (void *o, void *buf, uint32_t len, uint64_t off)
{
  struct conn_io *c = o;
  return c->ops->pread (c->conn, buf, len, off, mono_ns () + LABEL_IO_TIMEOUT_NS);
}

static int
conn_pwrite (void *o, const void *buf, uint32_t len, uint64_t off)
{
  struct conn_io *c = o;
  return c->ops->pwrite_durable (c->conn, buf, len, off, mono_ns () + LABEL_IO_TIMEOUT_NS);
}

static int
no_flush (void *o)
{
  (void) o;
  return 0;                      /* writes are durable (FUA, or write + flush) */
}

static int
reader_pread (void *o, void *buf, uint32_t len, uint64_t off)
{
  char err[160] = "";
  return rreader_pread (o, buf, len, off, err, sizeof err);
}

static int
reader_pwrite (void *o, const void *buf, uint32_t len, uint64_t off)
{
  char err[160] = "";
  return rreader_pwrite_durable (o, buf, len, off, err, sizeof err);
}

/* The label I/O of leg l: its fd, conn (a new connection) or its reader. */
static struct lbl_io
leg_io (struct leg *l, struct conn_io *conn)
{
  struct lbl_io io;
  if (conn) {
    io = (struct lbl_io) { conn, conn_pread, conn_pwrite, no_flush };
  }
  else if (l->remote)
    io = (struct lbl_io) { &l->reader, reader_pread, reader_pwrite, no_flush };
  else
    io = (struct lbl_io) { l->lb.own_fd ? &l->lb.fd : &l->fd, fd_pread, fd_pwrite, fd_flush };
  return io;
}

static uint64_t
end_base (uint64_t leg_size)
{
  return lbl_base_end (leg_size & ~UINT64_C(4095));
}

/* ---- opening ---- */

int
leglabel_open_path (struct leg *l)
{
  struct leg_label *lb = &l->lb;
  const char *what = l->site == 0 ? "local leg" : "leg";
  char err[256];
  bool other_bad;

  pthread_mutex_init (&lb->lock, NULL);
  lb->where = l->cfg->label;
  lb->fd = -1;
  if (lb->where == LABEL_NONE)
    return 0;
  if (lb->where == LABEL_END) {
    if (l->size < LBL_COPIES + LBL_AREA_ALIGN) {
      rep_error ("device '%s': %s %s is too small (%" PRIu64 " bytes) for a label at its end "
                 "(set label = \"none\" to use it without one)", l->dev->name, what, l->cfg->path, l->size);
      return -1;
    }
    lb->base = end_base (l->size);
  }
  else {
    lb->fd = open (l->cfg->label_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lb->fd == -1) {
      rep_error ("device '%s': label file %s of the %s: %m", l->dev->name, l->cfg->label_path, what);
      return -1;
    }
    lb->own_fd = true;
    if (flock (lb->fd, LOCK_EX | LOCK_NB) == -1) {
      rep_error ("device '%s': label file %s is locked by another instance", l->dev->name,
                 l->cfg->label_path);
      return -1;
    }
    {
      struct stat st;
      if (fstat (lb->fd, &st) == 0 && st.st_size < LBL_COPIES) {
        /* A new (or short) file: its size and name are durable before it
         * is trusted to be there (safety rule 14). */
        pft_create (lb->fd);
        if (ftruncate (lb->fd, LBL_COPIES) == -1 || fdatasync (lb->fd) == -1 ||
            io_sync_parent_dir (l->cfg->label_path) == -1) {
          rep_error ("device '%s': label file %s: %m", l->dev->name, l->cfg->label_path);
          return -1;
        }
      }
    }
    lb->base = 0;
  }
  {
    struct lbl_io io = leg_io (l, NULL);
    err[0] = 0;
    if (lbl_read (&io, lb->base, &lb->cur, &lb->found, &other_bad, err, sizeof err) < 0) {
      rep_error ("device '%s': reading the label of the %s %s: %s", l->dev->name, what, l->cfg->path, err);
      return -1;
    }
  }
  lb->have = lb->found == LBL_FOUND;
  if (lb->have && other_bad)
    rep_warn ("device '%s': one copy of the label of the %s %s is damaged (torn by a power "
              "loss?); the other is used and the next label write repairs it", l->dev->name,
              what, l->cfg->path);
  return 0;
}

void
leglabel_close (struct leg *l)
{
  if (l->lb.own_fd && l->lb.fd >= 0)
    close (l->lb.fd);
  l->lb.fd = -1;
  free (l->lb.record);
  l->lb.record = NULL;
}

uint64_t
leglabel_room (const struct leg *l, uint64_t dev_size)
{
  if (l->cfg->label != LABEL_END)
    return 0;
  return lbl_area_size (dev_size, (uint32_t) l->cfg->dirty_log.region_size);
}

uint64_t
leglabel_dev_size (const struct leg *l)
{
  return l->lb.have ? l->lb.cur.dev_size : 0;
}

/* ---- identity ---- */

static void
random_identity (struct replog_identity *id)
{
  unsigned i;
  memset (id, 0, sizeof *id);
  lbl_uuid_new (id->group);
  id->gen = lbl_gen_new ();
  for (i = 0; i < RL_MAX_DEVICES; i++)
    lbl_uuid_new (id->dev_uuid[i]);
}

static void
label_names (const struct label *lb, char *buf, size_t len)
{
  char g[37], gen[17];
  lbl_uuid_str (lb->group, g);
  lbl_gen_str (lb->gen, gen);
  snprintf (buf, len, "group %s, device '%.64s', generation %s, written by %.64s, %s", g,
            lb->name, gen, lb->writer[0] ? lb->writer : "?",
            (lb->flags & LBL_PRIMARY) ? "a primary's leg" : "a copy");
}

int
leglabel_propose (struct replicator *r, struct replog_identity *id)
{
  static char refuse[768];
  const struct label *first = NULL;
  bool needs_takeover = false;
  size_t i;

  random_identity (id);
  for (i = 0; i < r->ndevs; i++) {
    const struct leg *l = r->devs[i].local;
    if (!l->lb.have)
      continue;
    memcpy (id->dev_uuid[i], l->lb.cur.device, 16);
    if (!first)
      first = &l->lb.cur;
    else if (memcmp (first->group, l->lb.cur.group, 16) || first->gen != l->lb.cur.gen) {
      rep_error ("device '%s': the local leg %s belongs to another group or generation than "
                 "device '%s''s: the local legs of one instance must be of one group",
                 r->devs[i].name, l->cfg->path, first->name);
      return -1;
    }
    if (!(l->lb.cur.flags & (LBL_PRIMARY | LBL_HANDOVER)))
      needs_takeover = true;
  }
  if (!first)
    return 0;
  /* A new log follows the labels' generation with one of its own. */
  memcpy (id->group, first->group, 16);
  id->hist[0].id = first->gen;
  id->hist[0].end_seq = (first->flags & LBL_CONSISTENT) ? first->cons_seq : 0;
  id->hist[0].end_time_ns = first->cons_time_ns ? first->cons_time_ns : first->written_ns;
  i = first->nhist < RL_HIST - 1 ? first->nhist : RL_HIST - 1;
  memcpy (&id->hist[1], first->hist, i * sizeof id->hist[0]);
  id->nhist = (unsigned) i + 1;
  if (needs_takeover && !r->cfg->takeover) {
    char names[320];
    label_names (first, names, sizeof names);
    snprintf (refuse, sizeof refuse, "the local legs are labelled as another primary's copies "
              "(%s; consistent up to seq %" PRIu64 "%s): this log is new, and starting a primary "
              "on them is a takeover: add takeover=yes to take over after a disaster, or start "
              "the primary where it was", names, first->cons_seq,
              (first->flags & LBL_CONSISTENT) ? "" : ", NOT consistent");
    id->refuse = refuse;
  }
  else if (needs_takeover)
    rep_warn ("takeover: the local legs were another primary's copies (generation %016" PRIx64
              "); this instance starts a new generation %016" PRIx64 " from their state",
              first->gen, id->gen);
  return 0;
}

void
leglabel_self (const struct vdev *d, struct lbl_self *s)
{
  const struct replog_identity *id = &d->r->rec.identity;

  memset (s, 0, sizeof *s);
  memcpy (s->group, id->group, 16);
  memcpy (s->device, id->dev_uuid[d->index], 16);
  s->gen = id->gen;
  s->nhist = id->nhist < LBL_HIST ? id->nhist : LBL_HIST;
  memcpy (s->hist, id->hist, s->nhist * sizeof s->hist[0]);
}

/* ---- classification and writes ---- */

/* Classify the label in lb->cur / lb->found against d's identity; the
 * detail line for status (under lb->lock). */
static enum lbl_class
classify_locked (struct leg *l, struct lbl_gen *common)
{
  struct leg_label *lb = &l->lb;
  struct lbl_self self;
  char names[320], ours[17];

  leglabel_self (l->dev, &self);
  lb->cls = lbl_classify (&self, lb->found, lb->have ? &lb->cur : NULL, common);
  lb->checked = true;
  lb->checks++;
  lbl_gen_str (self.gen, ours);
  if (lb->have)
    label_names (&lb->cur, names, sizeof names);
  switch (lb->cls) {
  case LC_NEW:
    snprintf (lb->detail, sizeof lb->detail, "no label yet (a new leg)");
    break;
  case LC_NOT_BLANK:
    snprintf (lb->detail, sizeof lb->detail, "no label, but data where the label goes "
              "(the last %u bytes): not a leg of this replicator, or one used without a label",
              LBL_COPIES);
    break;
  case LC_FOREIGN:
    snprintf (lb->detail, sizeof lb->detail, "labelled for another group or device (%s)", names);
    break;
  case LC_SAME:
    snprintf (lb->detail, sizeof lb->detail, "ours (generation %s)", ours);
    break;
  case LC_OLDER:
    snprintf (lb->detail, sizeof lb->detail, "an older generation of ours (%s; ours is %s)", names, ours);
    break;
  case LC_NEWER:
    snprintf (lb->detail, sizeof lb->detail, "a newer generation that follows ours (%s; ours is "
              "%s): this instance was failed over", names, ours);
    break;
  case LC_SPLIT:
    snprintf (lb->detail, sizeof lb->detail, "split brain: %s, and ours is %s: each has a "
              "generation the other lacks", names, ours);
    break;
  }
  return lb->cls;
}

/* Fill out the label of leg l at leg size leg_size (for the end area). */
static void
compose (struct leg *l, struct label *out, uint64_t leg_size, uint32_t flags,
         uint64_t cons_seq, uint64_t cons_ns)
{
  struct leg_label *lb = &l->lb;
  struct lbl_self self;
  uint32_t rs = (uint32_t) l->cfg->dirty_log.region_size;
  uint64_t counter = lb->have ? lb->cur.counter : 0, gen_start = 0;

  leglabel_self (l->dev, &self);
  if (lb->have && lb->cur.gen == self.gen)
    gen_start = lb->cur.gen_start_ns;
  memset (out, 0, sizeof *out);
  memcpy (out->magic, LBL_MAGIC, 8);
  out->version = LBL_VERSION;
  out->size = LBL_SIZE;
  out->counter = counter;
  lbl_set_self (out, &self);
  snprintf (out->name, sizeof out->name, "%s", l->dev->name);
  out->dev_size = l->dev->size;
  out->region_size = rs;
  out->bitmap_bytes = lbl_bitmap_bytes (l->dev->size, rs);
  if (lb->where == LABEL_END) {
    out->area_size = lbl_area_size (l->dev->size, rs);
    out->bitmap_offset = end_base (leg_size) - out->bitmap_bytes;
  }
  else
    out->bitmap_offset = LBL_COPIES;
  out->site = l->site;
  /* After a switchover began labelling, every label says handed over. */
  if (__atomic_load_n (&l->dev->r->handover.state, __ATOMIC_ACQUIRE) >= HO_LABELLING)
    flags |= LBL_HANDOVER;
  /* A local leg is the primary's, but for a handover (switchover) or a
   * failback record (the legs of a primary that was failed over). */
  out->flags = flags | (l->site == 0 && !(flags & (LBL_HANDOVER | LBL_BITMAP)) ? LBL_PRIMARY : 0);
  if (flags & LBL_BITMAP) {
    out->bitmap_gen = lb->own_gen;
    out->bitmap_since_seq = lb->own_since;
  }
  out->gen_start_ns = gen_start ? gen_start : wall_ns ();
  out->cons_seq = cons_seq;
  out->cons_time_ns = cons_ns;
}

static int
write_with (struct leg *l, struct conn_io *conn, uint64_t leg_size, uint32_t flags,
            uint64_t cons_seq, uint64_t cons_ns)
{
  struct leg_label *lb = &l->lb;
  struct lbl_io io = leg_io (l, conn);
  struct label nl;
  char err[200] = "";
  int rc;

  /* The I/O runs without the lock (status must not wait for a remote):
   * only this leg's connector check or its worker write its label, never
   * both at once (the worker only while the link is up, the check only
   * on a connection the worker does not have yet). */
  pthread_mutex_lock (&lb->lock);
  compose (l, &nl, leg_size, flags, cons_seq, cons_ns);
  pthread_mutex_unlock (&lb->lock);
  rc = lbl_write (&io, lb->base, &nl, err, sizeof err);   /* 0 or -errno */
  pthread_mutex_lock (&lb->lock);
  if (rc < 0)
    snprintf (lb->detail, sizeof lb->detail, "label write failed: %s", err);
  else {
    lb->cur = nl;
    lb->have = true;
    lb->found = LBL_FOUND;
    lb->writes++;
    lb->trust_new = false;
  }
  pthread_mutex_unlock (&lb->lock);
  return rc < 0 ? -1 : 0;
}

int
leglabel_write (struct leg *l, uint32_t flags, uint64_t cons_seq, uint64_t cons_ns)
{
  int rc;
  bool refused;

  pthread_mutex_lock (&l->lb.lock);
  refused = l->lb.refused;
  pthread_mutex_unlock (&l->lb.lock);
  if (l->lb.where == LABEL_NONE || refused)
    return 0;
  rc = write_with (l, NULL, l->remote ? l->link.info.size : l->size, flags, cons_seq, cons_ns);
  if (rc == -1)
    rep_warn ("device '%s': leg at site %u: %s", l->dev->name, l->site, l->lb.detail);
  return rc;
}

/* A leg found not ours: refused, never written. */
static void
refuse (struct leg *l, const char *where)
{
  char detail[sizeof l->lb.detail];
  bool again;

  pthread_mutex_lock (&l->lb.lock);
  again = l->lb.refused;
  l->lb.refused = true;
  snprintf (detail, sizeof detail, "%s", l->lb.detail);
  pthread_mutex_unlock (&l->lb.lock);
  if (!again)
    rep_event (EV_LEG_REFUSED, (int) l->site, l->dev->name, "leg %s refused, never written: %s",
               where, detail);
}

/* Whether an older generation's label on a leg means it holds exactly the
 * state our generation started from (a planned switchover). */
static bool
handed_over_at (const struct label *lb, const struct lbl_gen *common)
{
  return (lb->flags & LBL_HANDOVER) && (lb->flags & LBL_CONSISTENT) &&
    lb->cons_seq == common->end_seq;
}

/* The leg carries our label now: what the check found stays in detail. */
static void
labelled (struct leg *l)
{
  char was[sizeof l->lb.detail];
  pthread_mutex_lock (&l->lb.lock);
  snprintf (was, sizeof was, "%s", l->lb.detail);
  snprintf (l->lb.detail, sizeof l->lb.detail, "ours, labelled at %s: it was %.500s",
            l->remote ? "connect" : "start", was);
  l->lb.cls = LC_SAME;
  pthread_mutex_unlock (&l->lb.lock);
}

enum copy_plan { COPY_NONE, COPY_FULL, COPY_RECORD };

/* Where generation id ended in a history (0: not in it). */
static uint64_t
hist_end (const struct lbl_gen *h, unsigned n, uint64_t id)
{
  unsigned i;
  for (i = 0; i < n && i < LBL_HIST; i++)
    if (h[i].id == id)
      return h[i].end_seq;
  return 0;
}

/* What a new, older or (discarded) split-brain leg needs: nothing when it
 * is trusted or holds exactly the state our generation began with (a
 * handover); its failback record (what it changed, merged with what we
 * changed since: our dirty log) when it has one that covers the span;
 * else a full (sparse-aware) copy, *why says why. */
static enum copy_plan
plan_copy (struct leg *l, enum lbl_class c, const struct lbl_gen *common, const char **why)
{
  const struct label *lb = &l->lb.cur;
  struct lbl_self self;

  *why = "";
  if (c == LC_NEW)
    return l->lb.trust_new ? COPY_NONE : COPY_FULL;
  if (c == LC_OLDER && handed_over_at (lb, common))
    return COPY_NONE;
  if (!(lb->flags & LBL_BITMAP)) {
    *why = " (it has no failback record of what it wrote: 'failback=yes' on its old "
           "primary makes one)";
    return COPY_FULL;
  }
  if (c == LC_OLDER && lb->bitmap_gen == common->id && lb->gen == common->id)
    return COPY_RECORD;
  leglabel_self (l->dev, &self);
  if (c == LC_SPLIT && common->id && lb->bitmap_gen == lb->gen &&
      lb->nhist && lb->hist[0].id == common->id && hist_end (self.hist, self.nhist, common->id) &&
      hist_end (self.hist, self.nhist, common->id) == lb->hist[0].end_seq)
    return COPY_RECORD;
  *why = " (its failback record does not cover what changed since the generation both "
         "sides share)";
  return COPY_FULL;
}

/* Read the leg's failback record (its label's bitmap) into lb->record. */
static int
read_record (struct leg *l, const struct lbl_io *io, uint64_t leg_size)
{
  const struct label *lb = &l->lb.cur;
  uint64_t off;
  uint8_t *buf;

  if (lb->bitmap_bytes == 0 || lb->bitmap_bytes > (UINT64_C(256) << 20) ||
      lb->region_size < 4096 || (lb->region_size & (lb->region_size - 1)) ||
      lb->bitmap_offset % 4096 || lb->bitmap_offset + lb->bitmap_bytes > leg_size)
    return -1;
  if (posix_memalign ((void **) &buf, 4096, (size_t) lb->bitmap_bytes) != 0)
    return -1;
  for (off = 0; off < lb->bitmap_bytes; off += 1u << 20) {
    uint32_t n = (uint32_t) (lb->bitmap_bytes - off < (1u << 20) ? lb->bitmap_bytes - off : (1u << 20));
    if (io->pread (io->opaque, buf + off, n, lb->bitmap_offset + off) != 0) {
      free (buf);
      return -1;
    }
  }
  pthread_mutex_lock (&l->lb.lock);
  free (l->lb.record);
  l->lb.record = buf;
  l->lb.record_bytes = lb->bitmap_bytes;
  l->lb.record_region = lb->region_size;
  pthread_mutex_unlock (&l->lb.lock);
  return 0;
}

/* A new or older (or discarded split-brain) leg of a remote site (through
 * conn, or its fd): labelled (under lb->lock), and queued for what it
 * needs copied.  0, or -1 (a write failed; lb->detail). */
static int
take_leg (struct leg *l, struct conn_io *conn, uint64_t leg_size, enum lbl_class c,
          const struct lbl_gen *common)
{
  const char *shown = l->remote ? l->link.shown : l->cfg->path, *why;
  struct site *s = &l->dev->r->sites[l->site];
  bool initial = __atomic_load_n (&l->initial_sync, __ATOMIC_ACQUIRE), trusted = l->lb.trust_new;
  enum copy_plan p = plan_copy (l, c, common, &why);
  struct lbl_io io = leg_io (l, conn);
  char found[sizeof l->lb.detail];

  if (p == COPY_RECORD && read_record (l, &io, leg_size) == -1) {
    p = COPY_FULL;
    why = " (its failback record could not be read)";
  }
  if (initial && p != COPY_NONE)
    p = COPY_NONE;                       /* an initial sync copies everything anyway */
  pthread_mutex_lock (&l->lb.lock);
  snprintf (found, sizeof found, "%s", l->lb.detail);
  pthread_mutex_unlock (&l->lb.lock);
  if (write_with (l, conn, leg_size, p != COPY_NONE || initial ? (c == LC_NEW ? LBL_NEW : LBL_RESYNC)
                  : LBL_CONSISTENT, 0, 0) == -1)
    return -1;
  labelled (l);
  if (p == COPY_FULL) {
    __atomic_or_fetch (&s->resync_full_devs, 1u << l->dev->index, __ATOMIC_ACQ_REL);
    rep_event (c == LC_NEW ? EV_LEG_NEW : EV_LEG_LABELLED, (int) l->site, l->dev->name,
               "leg %s: %s: labelled, and the device is copied onto it in full "
               "(sparse-aware)%s", shown, found, why);
  }
  else if (p == COPY_RECORD) {
    __atomic_or_fetch (&s->record_devs, 1u << l->dev->index, __ATOMIC_ACQ_REL);
    rep_event (EV_LEG_LABELLED, (int) l->site, l->dev->name, "leg %s: %s: labelled; the "
               "regions its failback record names and those written here since are copied "
               "onto it", shown, found);
  }
  else if (!trusted || c != LC_NEW)
    rep_event (EV_LEG_LABELLED, (int) l->site, l->dev->name, "leg %s: %s: labelled; nothing "
               "to copy (%s)", shown, found,
               c == LC_NEW ? "a trusted new leg" : initial ? "an initial sync copies it" :
               "handed over at the start of our generation");
  return 0;
}

static void same_leg (struct leg *l);

/* A local leg of our generation labelled handed over: this instance
 * handed its role over (replctl switchover); the new primary has a newer
 * generation.  Refused (-1), unless takeover=yes. */
static int
handed_over_here (struct leg *l)
{
  const struct label *lb = &l->lb.cur;
  char gen[17];

  if (!l->lb.have || !(lb->flags & LBL_HANDOVER))
    return 0;
  lbl_gen_str (lb->gen, gen);
  if (l->dev->r->cfg->takeover) {
    rep_warn ("device '%s': local leg %s: this instance handed its role over at seq %" PRIu64
              " (generation %s); takeover=yes: it is the primary again", l->dev->name,
              l->cfg->path, lb->cons_seq, gen);
    return 0;
  }
  rep_error ("device '%s': local leg %s: this instance handed its role over at seq %" PRIu64
             " (replctl switchover; generation %s): the new primary has the newer generation. "
             "To become the primary again, do a switchover back (from the new primary), then "
             "start here on a new log; takeover=yes overrides", l->dev->name, l->cfg->path,
             lb->cons_seq, gen);
  return -1;
}

/* A local leg that a failback run made a copy (its failback record):
 * this instance was failed over and must not be the primary on its old
 * log again (a failback run again is fine; takeover=yes overrides). */
static int
failed_back_here (struct leg *l)
{
  const struct label *lb = &l->lb.cur;

  if (!l->lb.have || !(lb->flags & LBL_BITMAP) || (lb->flags & LBL_PRIMARY) ||
      l->dev->r->cfg->failback || l->dev->r->cfg->takeover)
    return 0;
  rep_error ("device '%s': local leg %s: failback=yes made it a copy for the primary that "
             "took over (its failback record is on it): this instance must not be the primary "
             "on this log again; export the leg to the new primary as its remote (takeover=yes "
             "overrides)", l->dev->name, l->cfg->path);
  return -1;
}

/* Whether leg l's label (read through conn when l is remote and
 * connected) says it was handed over at exactly the end of generation g. */
static bool
leg_handed_over (struct leg *l, const struct lbl_gen *g)
{
  struct label lb;
  enum lbl_found found = LBL_BLANK;
  bool other_bad;
  char err[200];

  if (l->lb.where == LABEL_NONE)
    return false;
  if (!l->remote) {
    found = l->lb.found;
    lb = l->lb.cur;
  }
  else {
    struct conn_io cio = { l->link.conn, l->link.ops };
    struct lbl_io io = leg_io (l, &cio);
    if (!l->link.conn ||
        lbl_read (&io, end_base (l->link.info.size), &lb, &found, &other_bad, err, sizeof err) < 0)
      return false;
  }
  return found == LBL_FOUND && lb.gen == g->id && handed_over_at (&lb, g);
}

uint32_t
leglabel_handover_sites (struct replicator *r, const struct replog_identity *id)
{
  uint32_t sites = 0, bad = 0;
  size_t i, j;

  if (!id->nhist || id->refuse)
    return 0;
  for (i = 0; i < r->ndevs; i++) {
    const struct leg *loc = r->devs[i].local;
    if (!loc->lb.have || !(loc->lb.cur.flags & LBL_HANDOVER) || loc->lb.cur.gen != id->hist[0].id)
      return 0;                  /* not a new log that follows a switchover */
  }
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      struct lbl_gen g = { id->hist[0].id, id->hist[0].end_seq, 0 };
      if (l->site == 0)
        continue;
      if (leg_handed_over (l, &g))
        sites |= 1u << l->site;
      else
        bad |= 1u << l->site;
    }
  sites &= ~bad;
  for (i = 1; i < CFG_MAX_SITES; i++)
    if (sites & (1u << i))
      rep_info ("site %zu: every leg was handed over at seq %" PRIu64 " of the generation this "
                "log follows: it starts as a consistent copy, nothing copied", i, id->hist[0].end_seq);
    else if (bad & (1u << i))
      rep_info ("site %zu: not every leg is reachable and labelled handed over at seq %" PRIu64
                ": its legs are checked when they connect", i, id->hist[0].end_seq);
  return sites;
}

/* ---- path legs at start ---- */

int
leglabel_check_path_legs (struct vdev *d, bool *out_of_service)
{
  struct replicator *r = d->r;
  size_t j;

  *out_of_service = false;
  for (j = 0; j < d->nlegs; j++) {
    struct leg *l = &d->legs[j];
    struct lbl_gen common;
    enum lbl_class c;
    uint32_t flags = LBL_CONSISTENT;
    /* Labelled with this log's identity before?  Not yet (a new log, or a
     * crash between the header and the label): a blank or older local leg
     * is labelled now, not taken for another disk. */
    bool fresh = r->rec.identity_new ||
      (l->site == 0 && !(replog_dev_flags (r->rl, d->index) & RL_DEV_LABELLED));

    if (l->remote || l->lb.where == LABEL_NONE)
      continue;
    pthread_mutex_lock (&l->lb.lock);
    c = classify_locked (l, &common);
    pthread_mutex_unlock (&l->lb.lock);
    switch (c) {
    case LC_NOT_BLANK: case LC_FOREIGN: case LC_NEWER: case LC_SPLIT:
      refuse (l, l->cfg->path);
      rep_error ("device '%s': %s %s: %s%s", d->name, l->site ? "leg" : "local leg", l->cfg->path,
                 l->lb.detail, c == LC_NOT_BLANK ? " (set label = \"none\" to keep such a leg "
                 "as it is, or \"/path\" for a label file; or clear its last 8 KiB to make it "
                 "a new leg)" : c == LC_NEWER ? ": start the primary where that generation "
                 "is, or make this side a copy of it" : "");
      return -1;
    case LC_OLDER:
      if (fresh && r->rec.identity.nhist && common.id == r->rec.identity.hist[0].id)
        break;                   /* the generation this new log follows */
      /* fall through */
    case LC_NEW:
      if (fresh && c == LC_NEW)
        break;
      if (l->site != 0) {
        if (take_leg (l, NULL, l->size, c, &common) == -1) {
          rep_error ("device '%s': leg %s: %s", d->name, l->cfg->path, l->lb.detail);
          return -1;
        }
        continue;
      }
      /* A blank disk (or an old one) in place of the local leg: its
       * label is written only once a restore has copied the device. */
      *out_of_service = true;
      rep_event (EV_LEG_NEW, 0, d->name, "local leg %s: %s, while the log holds the device: "
                 "taken out of service (it may lack any write); 'replctl restore %s' copies the "
                 "device onto it", l->cfg->path, l->lb.detail, d->name);
      continue;
    case LC_SAME:
      if (l->site != 0) {
        same_leg (l);            /* nothing changed on it: not written */
        continue;
      }
      if (handed_over_here (l) == -1 || failed_back_here (l) == -1)
        return -1;
      break;
    }
    if (l->site != 0 && (replog_site_mode (r->rl, l->site) != RL_MODE_LOG ||
                         replog_site_flags (r->rl, l->site)))
      flags &= ~LBL_CONSISTENT;
    if (write_with (l, NULL, l->size, flags, replog_applied (r->rl, l->site), 0) == -1) {
      rep_error ("device '%s': leg %s: %s", d->name, l->cfg->path, l->lb.detail);
      return -1;
    }
    if (c != LC_SAME)
      labelled (l);
    if (l->site == 0 && replog_change_dev_flags (r->rl, d->index, RL_DEV_LABELLED, 0) == -1) {
      rep_error ("device '%s': recording the local leg's label in the log header: %m", d->name);
      return -1;
    }
  }
  return 0;
}

/* Our leg, labelled as being copied onto (new, or a resync) while the log
 * header calls its site a consistent prefix: a crash came between the
 * label and the header's resync flag.  Copied in full again. */
static void
same_leg (struct leg *l)
{
  struct replicator *r = l->dev->r;
  if (!(l->lb.cur.flags & (LBL_NEW | LBL_RESYNC)) || __atomic_load_n (&l->initial_sync, __ATOMIC_ACQUIRE) ||
      replog_site_mode (r->rl, l->site) != RL_MODE_LOG || replog_site_flags (r->rl, l->site))
    return;
  __atomic_or_fetch (&r->sites[l->site].resync_full_devs, 1u << l->dev->index, __ATOMIC_ACQ_REL);
  rep_event (EV_LEG_LABELLED, (int) l->site, l->dev->name, "leg %s: its label says a copy onto "
             "it did not finish: copied in full again", l->remote ? l->link.shown : l->cfg->path);
}

/* The leg's detail line (a copy: the buffer is rewritten under the lock). */
static const char *
cur_detail (struct leg *l)
{
  static __thread char buf[sizeof l->lb.detail];
  pthread_mutex_lock (&l->lb.lock);
  snprintf (buf, sizeof buf, "%s", l->lb.detail);
  pthread_mutex_unlock (&l->lb.lock);
  return buf;
}

int
leglabel_check_remote (void *opaque, void *conn, const struct link_ops *ops,
                       const struct link_info *info, char *err, size_t errlen)
{
  struct leg *l = opaque;
  struct leg_label *lb = &l->lb;
  struct conn_io cio = { conn, ops };
  struct lbl_io io = leg_io (l, &cio);
  struct lbl_gen common;
  enum lbl_class c;
  bool other_bad;
  char rerr[200] = "";
  int rc = 0;

  struct label cur;
  enum lbl_found found;

  if (lb->where == LABEL_NONE)
    return 0;
  /* The reads and writes run without lb->lock: status reads the label
   * state meanwhile, and a remote may take its time. */
  lb->base = end_base (info->size);
  if (lbl_read (&io, lb->base, &cur, &found, &other_bad, rerr, sizeof rerr) < 0) {
    snprintf (err, errlen, "reading its label: %s", rerr);
    return -1;
  }
  pthread_mutex_lock (&lb->lock);
  lb->cur = cur;
  lb->found = found;
  lb->have = found == LBL_FOUND;
  c = classify_locked (l, &common);
  pthread_mutex_unlock (&lb->lock);
  switch (c) {
  case LC_SPLIT:
    if (__atomic_load_n (&l->dev->r->sites[l->site].discard_split, __ATOMIC_ACQUIRE))
      goto take;                         /* replctl discard: its changes go */
    /* fall through */
  case LC_NOT_BLANK: case LC_FOREIGN: case LC_NEWER:
    refuse (l, l->link.shown);
    snprintf (err, errlen, "its label says it is not ours to write: %s", cur_detail (l));
    rc = -1;
    break;
  case LC_SAME:
    pthread_mutex_lock (&lb->lock);
    lb->refused = false;
    pthread_mutex_unlock (&lb->lock);
    same_leg (l);
    break;
  case LC_NEW: case LC_OLDER:
  take:
    pthread_mutex_lock (&lb->lock);
    lb->refused = false;
    pthread_mutex_unlock (&lb->lock);
    if (take_leg (l, &cio, info->size, c, &common) == -1) {
      snprintf (err, errlen, "%s", cur_detail (l));
      rc = -1;
    }
    break;
  }
  return rc;
}

bool
leglabel_still_ours (struct leg *l)
{
  struct leg_label *lb = &l->lb;
  struct lbl_io io = leg_io (l, NULL);
  struct label now;
  enum lbl_found found;
  bool other_bad, same;
  char err[200] = "";

  if (lb->where == LABEL_NONE || !l->remote)
    return true;
  if (lbl_read (&io, lb->base, &now, &found, &other_bad, err, sizeof err) < 0)
    return true;                 /* unreadable now: the connection's business */
  pthread_mutex_lock (&lb->lock);
  same = found == LBL_FOUND && lb->have && now.counter == lb->cur.counter &&
    now.gen == lb->cur.gen && !memcmp (now.group, lb->cur.group, 16) &&
    !memcmp (now.device, lb->cur.device, 16);
  if (!same)
    snprintf (lb->detail, sizeof lb->detail, "its label changed under a running connection "
              "(%s): checked again at a new connection",
              found == LBL_BLANK ? "blank now: a new disk?" : found == LBL_NONBLANK ?
              "no valid label now" : "another label now");
  pthread_mutex_unlock (&lb->lock);
  return same;
}

int
leglabel_write_record (struct leg *l, const struct bitmap *b, uint64_t since)
{
  struct leg_label *lb = &l->lb;
  struct lbl_io io = leg_io (l, NULL);
  struct label nl;
  uint8_t *buf;
  uint64_t i;
  int e;

  if (lb->where == LABEL_NONE || l->remote)
    return -1;
  compose (l, &nl, l->size, LBL_BITMAP, 0, 0);     /* where the bitmap goes */
  if (b->region_size != nl.region_size ||
      posix_memalign ((void **) &buf, 4096, (size_t) nl.bitmap_bytes) != 0)
    return -1;
  memset (buf, 0, (size_t) nl.bitmap_bytes);
  for (i = 0; i < b->nbits && i / 8 < nl.bitmap_bytes; i++)
    if (bitmap_test (b, i))
      buf[i / 8] |= (uint8_t) (1u << (i % 8));
  /* The bitmap is durable before the label that makes it count. */
  e = io.pwrite (io.opaque, buf, (uint32_t) nl.bitmap_bytes, nl.bitmap_offset);
  if (e == 0)
    e = io.flush (io.opaque);
  free (buf);
  if (e != 0) {
    snprintf (lb->detail, sizeof lb->detail, "failback record write failed: %s", strerror (-e));
    return -1;
  }
  pthread_mutex_lock (&lb->lock);
  lb->own_gen = l->dev->r->rec.identity.gen;
  lb->own_since = since;
  pthread_mutex_unlock (&lb->lock);
  return write_with (l, NULL, l->size, LBL_BITMAP | LBL_CONSISTENT, since, 0);
}

/* ---- the label thread ---- */

struct leglabel_thread {
  struct replicator *r;
  pthread_t thread;
  pthread_mutex_t lock;          /* guards every leg's post_* fields, stop */
  pthread_cond_t cv;             /* a post, or stop */
  bool stop;
};

/* The next queued leg (under t->lock), or NULL. */
static struct leg *
next_post (struct leglabel_thread *t)
{
  size_t i, j;
  for (i = 0; i < t->r->ndevs; i++)
    for (j = 0; j < t->r->devs[i].nlegs; j++)
      if (t->r->devs[i].legs[j].lb.post_queued)
        return &t->r->devs[i].legs[j];
  return NULL;
}

static void *
label_thread (void *arg)
{
  struct leglabel_thread *t = arg;
  struct leg *l;

  pthread_mutex_lock (&t->lock);
  while (!t->stop) {
    uint32_t flags;
    uint64_t seq, ns;
    bool check;
    if (!(l = next_post (t))) {
      pthread_cond_wait (&t->cv, &t->lock);
      continue;
    }
    l->lb.post_queued = false;
    l->lb.post_busy = true;
    flags = l->lb.post_flags;
    seq = l->lb.post_seq;
    ns = l->lb.post_ns;
    check = l->lb.post_check;
    pthread_mutex_unlock (&t->lock);
    if (check && !leglabel_still_ours (l)) {
      /* Another disk under a running connection: checked again. */
      __atomic_store_n (&l->lb.recheck, true, __ATOMIC_RELEASE);
      rep_warn ("%s: leg %s: %s", l->link.what, l->link.shown, cur_detail (l));
      if (t->r->poke)
        t->r->poke (&t->r->sites[l->site]);
    }
    else if (flags)                /* 0: a check only */
      leglabel_write (l, flags, seq, ns);
    pthread_mutex_lock (&t->lock);
    l->lb.post_busy = false;
    __atomic_store_n (&l->lb.post_pending, l->lb.post_queued, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&t->lock);
  return NULL;
}

int
leglabel_thread_start (struct replicator *r)
{
  struct leglabel_thread *t = calloc (1, sizeof *t);
  int e;

  if (!t) {
    rep_error ("calloc: %m");
    return -1;
  }
  t->r = r;
  pthread_mutex_init (&t->lock, NULL);
  pthread_cond_init (&t->cv, NULL);
  if ((e = pthread_create (&t->thread, NULL, label_thread, t)) != 0) {
    errno = e;
    rep_error ("cannot start the label thread: %m");
    free (t);
    return -1;
  }
  r->label_thread = t;
  return 0;
}

void
leglabel_thread_stop (struct replicator *r)
{
  struct leglabel_thread *t = r->label_thread;
  if (!t)
    return;
  pthread_mutex_lock (&t->lock);
  t->stop = true;                /* a write under way finishes; queued ones are dropped */
  pthread_cond_broadcast (&t->cv);
  pthread_mutex_unlock (&t->lock);
  pthread_join (t->thread, NULL);
  pthread_mutex_destroy (&t->lock);
  pthread_cond_destroy (&t->cv);
  free (t);
  r->label_thread = NULL;
}

void
leglabel_post (struct leg *l, uint32_t flags, uint64_t cons_seq, uint64_t cons_ns, bool check)
{
  struct leglabel_thread *t = l->dev->r->label_thread;

  if (l->lb.where == LABEL_NONE)
    return;
  if (!t) {                      /* no thread (tests, a failback run): now */
    if ((!check || leglabel_still_ours (l)) && flags)
      leglabel_write (l, flags, cons_seq, cons_ns);
    return;
  }
  pthread_mutex_lock (&t->lock);
  l->lb.post_queued = true;
  l->lb.post_flags = flags;
  l->lb.post_seq = cons_seq;
  l->lb.post_ns = cons_ns;
  l->lb.post_check = check;
  __atomic_store_n (&l->lb.post_pending, true, __ATOMIC_RELEASE);
  pthread_cond_signal (&t->cv);
  pthread_mutex_unlock (&t->lock);
}

bool
leglabel_pending (const struct leg *l)
{
  return __atomic_load_n (&l->lb.post_pending, __ATOMIC_ACQUIRE);
}

const char *
leglabel_state (const struct leg *l)
{
  if (l->lb.where == LABEL_NONE)
    return "none";
  if (!l->lb.checked)
    return l->remote ? "unchecked" : "ok";
  switch (l->lb.cls) {
  case LC_NEW: return "new";
  case LC_SAME: return "ok";
  case LC_OLDER: return "older";
  case LC_NOT_BLANK: return "not-blank";
  case LC_FOREIGN: return "foreign";
  case LC_NEWER: return "newer";
  case LC_SPLIT: return "split-brain";
  }
  return "?";
}
