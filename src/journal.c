/* journal.c: the agentless journal of a remote leg: its place on the leg,
 * the superblock, the writer's ring state, replay, and the I/O over an fd.
 * Format in journal.h and nbd-replicator-replog(5), JOURNAL; the batch
 * encoder is journal-enc.c.
 *
 * Owns: where the journal lives (after the stream record's block, before
 * the label's bitmap), its two superblock copies, which ring space the
 * writer may reuse, and replay.
 * Invariants:
 *   - a superblock write goes to slot (gen & 1) and never to the slot of
 *     the newest valid copy; at most one superblock write is outstanding
 *     between flushes (jnl_writer_place/release refuse with -EBUSY), so a
 *     torn write always leaves the last flushed copy readable;
 *   - the space of batch j is handed out again only after a superblock
 *     with applied >= j was flushed (jnl_writer_flushed drops it then);
 *   - where the batch after one ending at E starts is a function of E,
 *     ring_size and max_batch only (jnl_next_off): the writer and replay
 *     agree without reading the next batch;
 *   - replay applies a batch only when all of it checks (number, jid,
 *     UUIDs, lengths, crc over the whole batch), in number order, and
 *     writes nothing at all when no batch follows or the superblock is
 *     invalid; replaying twice is replaying once.
 * May call: utilities (crc32c, io, units for the wall clock, report for
 * the error lines), label.c (the leg's label tells where the journal is;
 * random ids), a link connection's synchronous calls through its ops
 * table (pointers: jnl_io_link), libc.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "io.h"
#include "journal.h"
#include "label.h"
#include "link.h"
#include "report.h"
#include "units.h"

#if !defined (__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the journal is stored as the host's structs: little-endian hosts only"
#endif

static uint64_t
align_up (uint64_t v, uint64_t a)
{
  return (v + a - 1) / a * a;
}

/* ---- geometry ---------------------------------------------------------------- */

void
jnl_geom (uint64_t dev_size, uint64_t room_end, struct jnl_geom *g)
{
  g->sb_off = align_up (dev_size, JNL_BLOCK) + JNL_BLOCK;   /* the stream record's block */
  g->ring_off = g->sb_off + JNL_SB_COPIES;
  g->room = room_end > g->ring_off ? room_end - g->ring_off : 0;
}

int
jnl_check_room (uint64_t dev_size, uint64_t room_end, uint64_t leg_size,
                uint64_t ring_size, char *err, size_t errlen)
{
  struct jnl_geom g;

  if (ring_size % JNL_BLOCK || ring_size < 4 * JNL_BLOCK) {
    rep_fmt (err, errlen, "journal size %" PRIu64 " is not a multiple of 4096 of at least 16384",
             ring_size);
    return -EINVAL;
  }
  jnl_geom (dev_size, room_end, &g);
  if (ring_size > g.room) {
    uint64_t missing = ring_size - g.room;
    rep_fmt (err, errlen, "the leg has no room for a journal of %" PRIu64 " bytes: it needs %"
             PRIu64 " bytes more between the device (%" PRIu64 " bytes) and the label's bitmap "
             "(a leg of at least %" PRIu64 " bytes)", ring_size, missing, dev_size,
             leg_size + missing);
    return -ENOSPC;
  }
  return 0;
}

uint64_t
jnl_next_off (uint64_t end_off, uint64_t ring_size, uint64_t max_batch)
{
  return end_off + max_batch <= ring_size ? end_off : 0;
}

/* ---- superblock ---------------------------------------------------------------- */

static uint32_t
super_crc (const struct jnl_super *s)
{
  return crc32c (0, s, offsetof (struct jnl_super, crc));
}

bool
jnl_super_valid (const struct jnl_super *s)
{
  if (memcmp (s->magic, JNL_SB_MAGIC, 8) != 0 || s->version != JNL_VERSION ||
      s->size != JNL_BLOCK || s->crc != super_crc (s))
    return false;
  if (s->gen >= UINT64_C(1) << 63 || s->jid == 0)
    return false;
  if (s->ring_off % JNL_BLOCK || s->ring_off < JNL_SB_COPIES ||
      s->ring_size % JNL_BLOCK || s->ring_size < 2 * JNL_BLOCK ||
      s->ring_off > UINT64_MAX - s->ring_size)
    return false;
  if (s->max_batch % JNL_BLOCK || s->max_batch < JNL_BLOCK || s->max_batch > JNL_BATCH_MAX ||
      s->max_batch > s->ring_size / 2)
    return false;
  return s->tail_off % JNL_BLOCK == 0 && s->tail_off + s->max_batch <= s->ring_size;
}

static bool
slot_valid (const struct jnl_super *s, unsigned slot)
{
  return jnl_super_valid (s) && (s->gen & 1) == slot;
}

enum jnl_sb_found
jnl_super_decode (const void *copies, struct jnl_super *out)
{
  struct jnl_super a, b;
  bool va, vb;

  memcpy (&a, copies, JNL_BLOCK);
  memcpy (&b, (const uint8_t *) copies + JNL_BLOCK, JNL_BLOCK);
  va = slot_valid (&a, 0);
  vb = slot_valid (&b, 1);
  if (!va && !vb) {
    memset (out, 0, sizeof *out);
    return io_all_zero (copies, JNL_SB_COPIES) ? JNL_SB_BLANK : JNL_SB_BAD;
  }
  *out = va && (!vb || a.gen > b.gen) ? a : b;
  return JNL_SB_OK;
}

void
jnl_super_seal (struct jnl_super *s)
{
  memcpy (s->magic, JNL_SB_MAGIC, 8);
  s->version = JNL_VERSION;
  s->size = JNL_BLOCK;
  s->written_ns = wall_ns ();
  memset (s->reserved, 0, sizeof s->reserved);
  s->crc = super_crc (s);
}

void
jnl_super_init (struct jnl_super *s, const uint8_t group[16], const uint8_t device[16],
                uint64_t dev_size, const struct jnl_geom *g, uint64_t ring_size,
                uint64_t max_batch)
{
  memset (s, 0, sizeof *s);
  memcpy (s->group, group, 16);
  memcpy (s->device, device, 16);
  s->jid = lbl_gen_new ();
  s->dev_size = dev_size;
  s->ring_off = g->ring_off;
  s->ring_size = ring_size;
  if (!max_batch)
    max_batch = ring_size / 4 / JNL_BLOCK * JNL_BLOCK;
  if (max_batch > JNL_BATCH_MAX)
    max_batch = JNL_BATCH_MAX;
  s->max_batch = max_batch;
}

static uint64_t
sb_pos (const struct jnl_super *s)
{
  return s->ring_off - JNL_SB_COPIES + (s->gen & 1) * JNL_BLOCK;
}

/* Write s (sealed) to its slot and flush. */
static int
super_write (const struct jnl_io *io, struct jnl_super *s, char *err, size_t errlen)
{
  void *buf;
  int rc;

  jnl_super_seal (s);
  if (posix_memalign (&buf, JNL_BLOCK, JNL_BLOCK) != 0) {
    rep_fmt (err, errlen, "out of memory for the journal superblock");
    return -ENOMEM;
  }
  memcpy (buf, s, JNL_BLOCK);
  rc = io->pwrite (io->opaque, buf, JNL_BLOCK, sb_pos (s));
  if (rc == 0)
    rc = io->flush (io->opaque);
  free (buf);
  if (rc < 0)
    rep_fmt (err, errlen, "writing the journal superblock: %s", strerror (-rc));
  return rc;
}

int
jnl_format (const struct jnl_io *io, struct jnl_super *s, char *err, size_t errlen)
{
  void *zero;
  int rc;

  s->gen = 0;
  s->applied = s->applied_seq = s->tail_off = 0;
  jnl_super_seal (s);
  if (!jnl_super_valid (s)) {
    rep_fmt (err, errlen, "journal geometry invalid (ring %" PRIu64 " bytes, batches up to %"
             PRIu64 ")", s->ring_size, s->max_batch);
    return -EINVAL;
  }
  if (posix_memalign (&zero, JNL_BLOCK, JNL_BLOCK) != 0) {
    rep_fmt (err, errlen, "out of memory for the journal superblock");
    return -ENOMEM;
  }
  memset (zero, 0, JNL_BLOCK);
  rc = io->pwrite (io->opaque, zero, JNL_BLOCK, s->ring_off - JNL_BLOCK);   /* copy B */
  free (zero);
  if (rc < 0) {
    rep_fmt (err, errlen, "writing the journal superblock: %s", strerror (-rc));
    return rc;
  }
  return super_write (io, s, err, errlen);
}

/* ---- the writer's ring state --------------------------------------------------- */

int
jnl_writer_init (struct jnl_writer *w, const struct jnl_super *sb)
{
  if (!jnl_super_valid (sb))
    return -EINVAL;
  memset (w, 0, sizeof *w);
  /* every live batch takes at least a block of the ring */
  w->capq = sb->ring_size / JNL_BLOCK;
  if (!(w->q = malloc (w->capq * sizeof *w->q)))
    return -ENOMEM;
  w->sb = *sb;
  w->head = sb->tail_off;
  w->next_number = sb->applied + 1;
  w->durable_applied = w->applied = sb->applied;
  w->applied_seq = sb->applied_seq;
  return 0;
}

void
jnl_writer_destroy (struct jnl_writer *w)
{
  free (w->q);
  w->q = NULL;
  w->nq = w->capq = 0;
}

uint64_t
jnl_writer_free_bytes (const struct jnl_writer *w)
{
  uint64_t tail;

  if (w->nq == 0)
    return w->sb.max_batch;
  tail = w->q[0].off;
  if (w->head > tail)           /* not wrapped: up to the ring's end, which
                                   jnl_next_off keeps max_batch away */
    return w->sb.max_batch;
  if (w->head == tail)          /* wrapped onto the oldest batch: full */
    return 0;
  return tail - w->head < w->sb.max_batch ? tail - w->head : w->sb.max_batch;
}

bool
jnl_writer_fits (const struct jnl_writer *w, uint64_t len)
{
  return len <= jnl_writer_free_bytes (w);
}

/* Ring offset of batch number (placed, or the next one). */
static uint64_t
batch_off (const struct jnl_writer *w, uint64_t number)
{
  size_t i;

  for (i = 0; i < w->nq; i++)
    if (w->q[i].number == number)
      return w->q[i].off;
  return w->head;
}

static void
build_super (struct jnl_writer *w, void *sb_buf, uint64_t *pos)
{
  w->sb.gen++;
  w->sb.applied = w->applied;
  w->sb.applied_seq = w->applied_seq;
  w->sb.tail_off = batch_off (w, w->applied + 1);
  jnl_super_seal (&w->sb);
  memcpy (sb_buf, &w->sb, JNL_BLOCK);
  *pos = sb_pos (&w->sb);
  w->sb_pending = true;
}

int
jnl_writer_place (struct jnl_writer *w, void *batch, uint64_t len, void *sb_buf,
                  uint64_t *batch_pos, uint64_t *sb_pos_out)
{
  struct jnl_batch_hdr *h = batch;

  if (w->sb_pending)
    return -EBUSY;
  if (len % JNL_BLOCK || len < JNL_BLOCK || len > w->sb.max_batch || h->total_len != len)
    return -E2BIG;
  if (!jnl_writer_fits (w, len) || w->nq == w->capq)
    return -ENOSPC;
  h->jid = w->sb.jid;
  h->number = w->next_number;
  h->next_off = jnl_next_off (w->head + len, w->sb.ring_size, w->sb.max_batch);
  h->crc = 0;
  h->crc = crc32c (0, batch, len);
  w->q[w->nq++] = (struct jnl_placed) { h->number, w->head, len, h->last_seq };
  *batch_pos = w->sb.ring_off + w->head;
  w->head = h->next_off;
  w->next_number++;
  build_super (w, sb_buf, sb_pos_out);
  return 0;
}

int
jnl_writer_release (struct jnl_writer *w, void *sb_buf, uint64_t *sb_pos_out)
{
  if (w->sb_pending)
    return -EBUSY;
  build_super (w, sb_buf, sb_pos_out);
  return 0;
}

void
jnl_writer_flushed (struct jnl_writer *w)
{
  size_t drop = 0;

  w->sb_pending = false;
  w->durable_applied = w->sb.applied;
  while (drop < w->nq && w->q[drop].number <= w->durable_applied)
    drop++;
  memmove (w->q, w->q + drop, (w->nq - drop) * sizeof *w->q);
  w->nq -= drop;
}

int
jnl_writer_applied (struct jnl_writer *w, uint64_t number)
{
  size_t i;

  if (number != w->applied + 1 || number >= w->next_number)
    return -EINVAL;
  for (i = 0; i < w->nq; i++)
    if (w->q[i].number == number)
      w->applied_seq = w->q[i].last_seq;
  w->applied = number;
  return 0;
}

/* ---- replay ---------------------------------------------------------------------- */

/* The header of batch number at ring offset off, before its crc is known:
 * lengths consistent with sb. */
static bool
header_ok (const struct jnl_batch_hdr *h, const struct jnl_super *sb, uint64_t number,
           uint64_t off)
{
  uint64_t table_end;

  if (memcmp (h->magic, JNL_BATCH_MAGIC, 8) != 0 || h->version != JNL_VERSION ||
      h->hdr_size != JNL_HDR_SIZE || h->jid != sb->jid || h->number != number ||
      memcmp (h->group, sb->group, 16) != 0 || memcmp (h->device, sb->device, 16) != 0 ||
      h->flags != 0)
    return false;
  if (h->total_len % JNL_BLOCK || h->total_len < JNL_BLOCK || h->total_len > sb->max_batch ||
      off + h->total_len > sb->ring_size)
    return false;
  if (h->next_off != jnl_next_off (off + h->total_len, sb->ring_size, sb->max_batch))
    return false;
  table_end = align_up (JNL_HDR_SIZE + (uint64_t) h->nentries * sizeof (struct jnl_entry),
                        JNL_BLOCK);
  return table_end <= h->total_len && h->data_bytes <= h->total_len - table_end;
}

/* The whole batch checks: crc, and the table adds up within the device. */
static bool
batch_ok (uint8_t *buf, const struct jnl_super *sb)
{
  struct jnl_batch_hdr *h = (struct jnl_batch_hdr *) buf;
  const struct jnl_entry *t = (const struct jnl_entry *) (buf + JNL_HDR_SIZE);
  uint32_t crc = h->crc, i;
  uint64_t data = 0;
  bool ok;

  h->crc = 0;
  ok = crc32c (0, buf, h->total_len) == crc;
  h->crc = crc;
  for (i = 0; ok && i < h->nentries; i++) {
    ok = t[i].len && t[i].len <= JNL_EXT_MAX && (t[i].flags == JNL_DATA || t[i].flags == JNL_ZERO) &&
      t[i].off <= sb->dev_size && t[i].len <= sb->dev_size - t[i].off;
    data += t[i].flags == JNL_DATA ? t[i].len : 0;
  }
  return ok && data == h->data_bytes;
}

/* Apply one checked batch in place (no flush). */
static int
apply_batch (const struct jnl_io *io, const uint8_t *buf, struct jnl_replay_sum *sum)
{
  const struct jnl_batch_hdr *h = (const struct jnl_batch_hdr *) buf;
  const struct jnl_entry *t = (const struct jnl_entry *) (buf + JNL_HDR_SIZE);
  const uint8_t *d = buf + align_up (JNL_HDR_SIZE + (uint64_t) h->nentries * sizeof *t, JNL_BLOCK);
  uint32_t i;
  int rc;

  for (i = 0; i < h->nentries; i++) {
    if (t[i].flags == JNL_DATA) {
      rc = io->pwrite (io->opaque, d, t[i].len, t[i].off);
      d += t[i].len;
    }
    else
      rc = io->zero (io->opaque, t[i].len, t[i].off);
    if (rc < 0)
      return rc;
    sum->bytes += t[i].len;
  }
  sum->entries += h->nentries;
  if (sum->batches++ == 0) {
    sum->first_batch = h->number;
    sum->first_seq = h->first_seq;
  }
  sum->last_batch = h->number;
  sum->last_seq = h->last_seq;
  return 0;
}

/* Read batch number at ring offset off into buf (max_batch bytes): 1 when
 * it is whole and valid, 0 when not (the chain ends), -errno. */
static int
read_batch (const struct jnl_io *io, const struct jnl_super *sb, uint64_t number, uint64_t off,
            uint8_t *buf)
{
  const struct jnl_batch_hdr *h = (const struct jnl_batch_hdr *) buf;
  int rc;

  rc = io->pread (io->opaque, buf, JNL_BLOCK, sb->ring_off + off);
  if (rc < 0)
    return rc;
  if (!header_ok (h, sb, number, off))
    return 0;
  if (h->total_len > JNL_BLOCK) {
    rc = io->pread (io->opaque, buf + JNL_BLOCK, (uint32_t) (h->total_len - JNL_BLOCK),
                    sb->ring_off + off + JNL_BLOCK);
    if (rc < 0)
      return rc;
  }
  return batch_ok (buf, sb);
}

int
jnl_replay (const struct jnl_io *io, struct jnl_super *sb, struct jnl_replay_sum *sum,
            char *err, size_t errlen)
{
  struct jnl_super nsb = *sb;
  uint64_t off = sb->tail_off, number = sb->applied + 1, last_seq = sb->applied_seq;
  uint8_t *buf;
  int rc;

  memset (sum, 0, sizeof *sum);
  sum->applied_before = sb->applied;
  if (!jnl_super_valid (sb)) {
    rep_fmt (err, errlen, "the journal superblock is invalid");
    return -EINVAL;
  }
  if (posix_memalign ((void **) &buf, JNL_BLOCK, sb->max_batch) != 0) {
    rep_fmt (err, errlen, "out of memory for a journal batch (%" PRIu64 " bytes)", sb->max_batch);
    return -ENOMEM;
  }
  while ((rc = read_batch (io, sb, number, off, buf)) == 1) {
    const struct jnl_batch_hdr *h = (const struct jnl_batch_hdr *) buf;
    if ((rc = apply_batch (io, buf, sum)) < 0)
      break;
    off = h->next_off;
    last_seq = h->last_seq;
    number++;
  }
  free (buf);
  if (rc < 0) {
    rep_fmt (err, errlen, "replaying journal batch %" PRIu64 ": %s", number, strerror (-rc));
    return rc;
  }
  if (sum->batches == 0)
    return 0;
  if ((rc = io->flush (io->opaque)) < 0) {
    rep_fmt (err, errlen, "flushing the leg after the journal's replay: %s", strerror (-rc));
    return rc;
  }
  nsb.gen++;
  nsb.applied = number - 1;
  nsb.tail_off = off;
  nsb.applied_seq = last_seq;
  if ((rc = super_write (io, &nsb, err, errlen)) < 0)
    return rc;
  *sb = nsb;
  return 0;
}

void
jnl_replay_str (const struct jnl_replay_sum *s, char *buf, size_t len)
{
  if (s->batches == 0)
    snprintf (buf, len, "journal: nothing to replay (batches up to %" PRIu64 " applied)",
              s->applied_before);
  else
    snprintf (buf, len, "journal: replayed %" PRIu64 " batch%s (%" PRIu64 "..%" PRIu64 "), %"
              PRIu64 " entries, %" PRIu64 " bytes, log seqs %" PRIu64 "..%" PRIu64,
              s->batches, s->batches == 1 ? "" : "es", s->first_batch, s->last_batch,
              s->entries, s->bytes, s->first_seq, s->last_seq);
}

/* ---- finding it ------------------------------------------------------------------- */

int
jnl_read_super (const struct jnl_io *io, const struct jnl_geom *g, struct jnl_super *sb,
                char *err, size_t errlen)
{
  void *buf;
  int rc;

  if (posix_memalign (&buf, JNL_BLOCK, JNL_SB_COPIES) != 0) {
    rep_fmt (err, errlen, "out of memory for the journal superblock");
    return -ENOMEM;
  }
  rc = io->pread (io->opaque, buf, JNL_SB_COPIES, g->sb_off);
  if (rc < 0)
    rep_fmt (err, errlen, "reading the journal superblock: %s", strerror (-rc));
  else {
    switch (jnl_super_decode (buf, sb)) {
    case JNL_SB_OK: rc = 0; break;
    case JNL_SB_BLANK: rc = 1; break;
    case JNL_SB_BAD:
      rep_fmt (err, errlen, "the journal superblock is invalid (neither copy passes its checks)");
      rc = -EINVAL;
      break;
    }
  }
  free (buf);
  return rc;
}

/* The superblock belongs to the label's device and lies in its room. */
static int
super_matches (const struct jnl_super *sb, const struct label *l, const struct jnl_geom *g,
               char *err, size_t errlen)
{
  if (memcmp (sb->group, l->group, 16) != 0 || memcmp (sb->device, l->device, 16) != 0) {
    rep_fmt (err, errlen, "the journal superblock names another group or device than the leg's label");
    return -EINVAL;
  }
  if (sb->dev_size != l->dev_size || sb->ring_off != g->ring_off || sb->ring_size > g->room) {
    rep_fmt (err, errlen, "the journal superblock's geometry (device %" PRIu64 ", ring %" PRIu64
             "+%" PRIu64 ") does not fit the leg's label (device %" PRIu64 ", room up to %" PRIu64 ")",
             sb->dev_size, sb->ring_off, sb->ring_size, l->dev_size, l->bitmap_offset);
    return -EINVAL;
  }
  return 0;
}

int
jnl_locate (const struct jnl_io *io, uint64_t leg_size, struct jnl_geom *g,
            struct jnl_super *sb, char *err, size_t errlen)
{
  struct lbl_io lio = { io->opaque, io->pread, io->pwrite, io->flush };
  enum lbl_found found;
  struct label l;
  bool other_bad;
  int rc;

  if (leg_size < LBL_COPIES) {
    rep_fmt (err, errlen, "no journal on this leg: it is too small for a label");
    return 1;
  }
  rc = lbl_read (&lio, lbl_base_end (leg_size), &l, &found, &other_bad, err, errlen);
  if (rc < 0)
    return rc;
  if (found != LBL_FOUND) {
    rep_fmt (err, errlen, "no journal on this leg: %s", found == LBL_BLANK ?
             "it has no label" : "its label area holds no valid label");
    return 1;
  }
  if (l.area_size == 0 || l.bitmap_offset > leg_size) {
    rep_fmt (err, errlen, "no journal on this leg: its label is not at its end");
    return 1;
  }
  jnl_geom (l.dev_size, l.bitmap_offset, g);
  if (g->room < 2 * JNL_BLOCK) {
    rep_fmt (err, errlen, "no journal on this leg: no room between the device and the label");
    return 1;
  }
  rc = jnl_read_super (io, g, sb, err, errlen);
  if (rc == 1)
    rep_fmt (err, errlen, "no journal on this leg: the journal area is blank");
  if (rc != 0)
    return rc;
  return super_matches (sb, &l, g, err, errlen);
}

/* ---- opening a journalled leg ------------------------------------------------- */

int
jnl_prepare (const struct jnl_io *io, const uint8_t group[16], const uint8_t device[16],
             uint64_t dev_size, uint64_t room_end, uint64_t leg_size, uint64_t ring_size,
             struct jnl_super *sb, struct jnl_replay_sum *sum, char *err, size_t errlen)
{
  struct jnl_geom g;
  int rc;

  memset (sum, 0, sizeof *sum);
  if ((rc = jnl_check_room (dev_size, room_end, leg_size, ring_size, err, errlen)) < 0)
    return rc;
  jnl_geom (dev_size, room_end, &g);
  rc = jnl_read_super (io, &g, sb, err, errlen);
  if (rc < 0)
    return rc;
  if (rc == 0) {
    if (memcmp (sb->group, group, 16) != 0 || memcmp (sb->device, device, 16) != 0) {
      rep_fmt (err, errlen, "the leg's journal belongs to another group or device");
      return -EINVAL;
    }
    if (sb->dev_size != dev_size || sb->ring_off != g.ring_off) {
      rep_fmt (err, errlen, "the leg's journal was made for a device of %" PRIu64 " bytes, "
               "not %" PRIu64, sb->dev_size, dev_size);
      return -EINVAL;
    }
    if ((rc = jnl_replay (io, sb, sum, err, errlen)) < 0)
      return rc;
    if (sb->ring_size == ring_size)
      return 0;
  }
  /* none yet, or another size (replayed: nothing in it counts any more) */
  jnl_super_init (sb, group, device, dev_size, &g, ring_size, 0);
  return jnl_format (io, sb, err, errlen);
}

/* ---- a file or block device ----------------------------------------------------- */

static int
fd_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  return io_pread_full (*(int *) opaque, buf, len, off, false) == 0 ? 0 : -errno;
}

static int
fd_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  return io_pwrite_full (*(int *) opaque, buf, len, off) == 0 ? 0 : -errno;
}

int
jnl_write_zeroes (int (*pwrite) (void *opaque, const void *buf, uint32_t len, uint64_t off),
                  void *opaque, uint32_t len, uint64_t off)
{
  static const uint8_t zeroes[1u << 20] __attribute__ ((aligned (4096)));

  while (len) {
    uint32_t n = len < sizeof zeroes ? len : sizeof zeroes;
    int rc = pwrite (opaque, zeroes, n, off);
    if (rc < 0)
      return rc;
    off += n;
    len -= n;
  }
  return 0;
}

static int
fd_zero (void *opaque, uint32_t len, uint64_t off)
{
  if (fallocate (*(int *) opaque, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t) off, len) == 0)
    return 0;
  /* a block device or a file system without it */
  return jnl_write_zeroes (fd_pwrite, opaque, len, off);
}

static int
fd_flush (void *opaque)
{
  return fdatasync (*(int *) opaque) == 0 ? 0 : -errno;
}

void
jnl_io_fd (struct jnl_io *io, int *fd)
{
  *io = (struct jnl_io) { fd, fd_pread, fd_pwrite, fd_zero, fd_flush };
}

/* ---- a remote leg's connection ------------------------------------------------- */

/* Every write is durable when it returns (pwrite_durable: FUA, or a write
 * then a flush), so the flush has nothing left to do.  Replay is rare (an
 * opening of the leg), so a round trip per entry costs little, and the
 * transports need no plain synchronous write. */
static int
l_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  const struct jnl_link *k = opaque;

  return k->ops->pread (k->conn, buf, len, off, mono_ns () + k->timeout_ns);
}

static int
l_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  const struct jnl_link *k = opaque;

  return k->ops->pwrite_durable (k->conn, buf, len, off, mono_ns () + k->timeout_ns);
}

static int
l_zero (void *opaque, uint32_t len, uint64_t off)
{
  return jnl_write_zeroes (l_pwrite, opaque, len, off);
}

static int
l_flush (void *opaque)
{
  (void) opaque;
  return 0;
}

void
jnl_io_link (struct jnl_io *io, struct jnl_link *k)
{
  *io = (struct jnl_io) { k, l_pread, l_pwrite, l_zero, l_flush };
}
