/* stream.c: the stream record and the check of a new connection to a
 * receiver (see stream.h).
 *
 * Owns: the record's format; the fence and the record read at connect.
 * May call: leg-label.c (the label check comes first), label.h geometry,
 * the link's synchronous pread and pwrite_durable on the new connection.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "label.h"
#include "leg-label.h"
#include "replicator.h"
#include "report.h"
#include "stream.h"
#include "units.h"

#define STREAM_IO_TIMEOUT_NS (UINT64_C (30) * 1000000000)

uint32_t
stream_io_len (uint32_t block_size)
{
  if (block_size <= STREAM_REC_SIZE)
    return STREAM_REC_SIZE;
  return block_size <= STREAM_IO_MAX ? block_size : 0;
}

uint64_t
stream_record_off (const struct leg *l, uint64_t leg_size, uint32_t io_len)
{
  uint64_t off = l->dev->size, bitmap;

  if (l->lb.where != LABEL_END || leg_size < LBL_COPIES || !io_len || off % io_len)
    return 0;
  bitmap = lbl_bitmap_bytes (l->dev->size, (uint32_t) l->cfg->dirty_log.region_size);
  if (lbl_base_end (leg_size) < bitmap || off + io_len > lbl_base_end (leg_size) - bitmap)
    return 0;
  return off;
}

static uint32_t
rec_crc (const struct stream_rec *r)
{
  return crc32c (0, r, offsetof (struct stream_rec, crc));
}

void
stream_record (void *buf, uint32_t io_len, const struct vdev *d, uint64_t seq, uint64_t time_ns)
{
  struct stream_rec *r = buf;
  const struct replog_identity *id = &d->r->rec.identity;
  struct timespec ts;

  memset (buf, 0, io_len);
  memcpy (r->magic, STREAM_MAGIC, 8);
  r->version = 1;
  r->size = STREAM_REC_SIZE;
  memcpy (r->group, id->group, 16);
  memcpy (r->device, id->dev_uuid[d->index], 16);
  r->gen = id->gen;
  r->seq = seq;
  r->time_ns = time_ns;
  clock_gettime (CLOCK_REALTIME, &ts);
  r->written_ns = (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
  r->crc = rec_crc (r);
}

/* The record in buf, if it is this device's of this generation: its seq;
 * else 0 (none, another group's or generation's, or damaged). */
static uint64_t
record_seq (const struct stream_rec *r, const struct vdev *d)
{
  const struct replog_identity *id = &d->r->rec.identity;

  if (memcmp (r->magic, STREAM_MAGIC, 8) || r->version != 1 || r->size != STREAM_REC_SIZE ||
      r->crc != rec_crc (r))
    return 0;
  if (memcmp (r->group, id->group, 16) || memcmp (r->device, id->dev_uuid[d->index], 16) ||
      r->gen != id->gen)
    return 0;
  return r->seq;
}

int
stream_check (void *opaque, void *conn, const struct link_ops *ops, struct link_info *info,
              char *err, size_t errlen)
{
  struct leg *l = opaque;
  struct stream_rec *rec;
  uint32_t io_len = stream_io_len (info->block_size);
  uint64_t off;
  int rc;

  info->stream = false;
  info->stream_seq = 0;
  if ((rc = leglabel_check_remote (opaque, conn, ops, info, err, errlen)) != 0)
    return rc;
  if (!info->receiver || getenv ("NBD_REPLICATOR_NO_STREAM") || !ops->fence || !ops->pread)
    return 0;
  if (!(off = stream_record_off (l, info->size, io_len))) {
    rep_info ("device '%s': site %u: %s is a receiver, but the leg has no room for the stream "
              "record (label=end and one block before the label's bitmap are needed): a round trip "
              "per epoch", l->dev->name, l->site, l->link.shown);
    return 0;
  }
  rc = ops->fence (conn, off, STREAM_FENCE_LEN, mono_ns () + STREAM_IO_TIMEOUT_NS);
  if (rc == -EOPNOTSUPP) {
    rep_info ("device '%s': site %u: %s says it is a receiver but takes no NBD CACHE (the "
              "fence): a round trip per epoch", l->dev->name, l->site, l->link.shown);
    return 0;
  }
  if (rc < 0) {
    snprintf (err, errlen, "fencing the receiver's older connections: %s", strerror (-rc));
    return -1;
  }
  if (posix_memalign ((void **) &rec, 4096, io_len) != 0) {
    snprintf (err, errlen, "out of memory for the stream record");
    return -1;
  }
  rc = ops->pread (conn, rec, io_len, off, mono_ns () + STREAM_IO_TIMEOUT_NS);
  if (rc < 0) {
    snprintf (err, errlen, "reading the receiver's stream record: %s", strerror (-rc));
    free (rec);
    return -1;
  }
  info->stream = true;
  info->stream_off = off;
  info->stream_len = io_len;
  info->stream_seq = record_seq (rec, l->dev);
  free (rec);
  return 0;
}
