/* failback.c: the failback record of a primary that was failed over
 * (layer 5, beside the site state machine; leg labels, safety rule 15).
 *
 * Owns: `failback=yes`, a one-shot run on the old primary's legs while it
 * does not serve: the log recovered, and for each device the regions its
 * local leg may hold that the site which took over lacks: those of every
 * entry the log holds after the lowest applied seq of its remote sites,
 * and every region a remote site's dirty log marks (a site in dirty-log
 * mode, in doubt, or whose record was lost has them all marked by the
 * site's start).  The union goes into the local leg's label bitmap, made
 * durable, then the label says LBL_BITMAP and no longer a primary's: the
 * new primary copies exactly those regions and its own since.
 * Invariant: nothing is written but the local legs' label areas; no
 * remote is connected, no worker started.
 * Calls down only: the log (descriptors, applied), bitmaps, leg labels,
 * reports.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "bitmap.h"
#include "failback.h"
#include "leg-label.h"
#include "replicator.h"
#include "report.h"

/* The lowest applied seq among the remote sites (UINT64_MAX: none is
 * configured, so nothing recorded what the others lack). */
static uint64_t
remote_floor (struct replicator *r)
{
  uint64_t low = UINT64_MAX;
  unsigned i;
  for (i = 1; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && replog_applied (r->rl, i) < low)
      low = replog_applied (r->rl, i);
  return low;
}

/* dst |= src (any region sizes: src's regions as byte ranges). */
static void
mark_from (struct bitmap *dst, const struct bitmap *src)
{
  uint64_t i;
  for (i = bitmap_next_set (src, 0); i < src->nbits; i = bitmap_next_set (src, i + 1))
    bitmap_set_range (dst, i * src->region_size, src->region_size);
}

/* Device d's record: remote legs' dirty logs and the entries after since. */
static struct bitmap *
device_record (struct replicator *r, struct vdev *d, uint64_t since)
{
  struct bitmap *b = bitmap_new (d->size, d->local->cfg->dirty_log.region_size);
  uint64_t seq;
  size_t j;

  if (!b)
    return NULL;
  if (since == UINT64_MAX) {
    bitmap_set_all (b);
    return b;
  }
  for (j = 0; j < d->nlegs; j++)
    if (d->legs[j].site != 0 && d->legs[j].dirty_log)
      mark_from (b, d->legs[j].dirty_log);
  if (r->rec.entries == 0)
    return b;
  for (seq = since + 1 > r->rec.first_seq ? since + 1 : r->rec.first_seq; seq <= r->rec.last_seq; seq++) {
    const struct rl_desc *e = replog_desc (r->rl, seq);
    if (e->op != RL_OP_BARRIER && e->device == d->index)
      bitmap_set_range (b, e->offset, e->length);
  }
  return b;
}

int
failback_record (struct replicator *r)
{
  uint64_t since = remote_floor (r);
  size_t i;

  if (since == UINT64_MAX)
    rep_warn ("failback: this log has no remote site: nothing recorded what this side wrote "
              "that the others lack, so every region is recorded (the new primary copies "
              "everything)");
  for (i = 1; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && r->sites[i].in_doubt)
      rep_warn ("failback: site %zu had writes in doubt at the crash (a connection aborted with "
                "writes in flight, which it may have applied late): which regions is known only "
                "in memory, so every region is recorded and the new primary copies everything", i);

  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    struct bitmap *b;
    uint64_t n;

    if (d->local->lb.where == LABEL_NONE) {
      rep_error ("failback: device '%s': the local leg %s has no label (label = none): "
                 "nothing can say what it wrote; the new primary copies it in full", d->name,
                 d->local->cfg->path);
      return -1;
    }
    if (!(b = device_record (r, d, since))) {
      rep_error ("failback: device '%s': out of memory", d->name);
      return -1;
    }
    n = bitmap_count (b);
    if (leglabel_write_record (d->local, b, since == UINT64_MAX ? 0 : since) == -1) {
      rep_error ("failback: device '%s': local leg %s: %s", d->name, d->local->cfg->path,
                 d->local->lb.detail[0] ? d->local->lb.detail : "the record could not be written");
      bitmap_free (b);
      return -1;
    }
    rep_info ("failback: device '%s': %" PRIu64 " regions (%" PRIu64 " MiB of %" PRIu64
              " MiB) this side may hold that the site which took over lacks (entries after "
              "seq %" PRIu64 " and the remote sites' dirty logs), recorded on %s; it is "
              "labelled a copy now", d->name, n, (n * b->region_size) >> 20, d->size >> 20,
              since, d->local->cfg->path);
    bitmap_free (b);
  }
  rep_info ("failback: done.  Export these legs to the new primary as its remote (a plain NBD "
            "server or iSCSI target); it copies the regions recorded here and those it wrote "
            "since the takeover, nothing else.  This instance must not be started as a "
            "primary on this log again.");
  return 0;
}
