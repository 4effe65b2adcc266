/* fuzz-journal.c: libFuzzer harness for the agentless journal's replay
 * (jnl_read_super, jnl_replay; src/journal.c) and its encoder
 * (src/journal-enc.c), on a leg in memory.
 *
 * The input describes a history the journal's own writer makes, then
 * damage:
 *   u8 flags       bit0 F_RESEAL: after the patches, recompute the crc of
 *                  every batch header found at a 4096 boundary of the ring
 *                  and of both superblock copies (reach the checks past
 *                  the crc); bit1 F_SB: patches may hit the superblocks
 *   u8 nbatches    1..8 batches
 *   u8 napplied    batches applied in place and released before the crash
 *   then per batch: u8 nent (1..16), then per entry u16 off, u16 len
 *                  (1..1024), u8 kind (odd: zeroes) over a 64 KiB device;
 *                  data bytes from a counter (a batch that does not fit,
 *                  and those after it, are left out)
 *   then patches to the end: u16 off (into the ring, or the superblocks
 *   with F_SB), u8 len (1..16), len bytes.
 * The writer places each batch, writes it with its superblock, "flushes";
 * batches <= napplied are applied in place and released; the image is
 * then patched and replayed twice.
 *
 * Invariants checked (ids in brackets):
 *   [journal-bounds]  replay writes only the device's bytes and the
 *                     superblock copies, and only whole 4096-byte
 *                     superblocks;
 *   [journal-invalid] no valid superblock copy: an error, nothing written;
 *   [journal-prefix]  without F_RESEAL and F_SB, the device after replay
 *                     is the state after batch j for some j >= napplied
 *                     (never a mix), and j is what the summary says;
 *   [journal-idempotent] a second replay finds no batch, writes nothing.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "journal.h"

#include "fuzz-common.h"

enum { F_RESEAL = 1, F_SB = 2 };
enum { DEV = 65536, RING = 65536, MAXB = 16384, MAXBATCH = 8 };

static uint8_t leg[DEV + 4096 + 8192 + RING];
static uint8_t models[MAXBATCH + 1][DEV];
static uint8_t pool[16 * 4096];
static const uint8_t G[16] = { 7 }, D[16] = { 8 };
static struct jnl_geom geom;

/* ---- the leg in memory, every write checked ---- */

static unsigned writes;
static bool bad_write;

static int
m_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  (void) opaque;
  if (off > sizeof leg || len > sizeof leg - off)
    return -EIO;
  memcpy (buf, leg + off, len);
  return 0;
}

static bool
in_bounds (uint32_t len, uint64_t off)
{
  if (off < DEV)
    return len <= DEV - off;
  return len == 4096 && (off == geom.sb_off || off == geom.sb_off + 4096);
}

static int
m_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  (void) opaque;
  writes++;
  if (!in_bounds (len, off)) {
    bad_write = true;
    return -EIO;
  }
  memcpy (leg + off, buf, len);
  return 0;
}

static int
m_zero (void *opaque, uint32_t len, uint64_t off)
{
  (void) opaque;
  writes++;
  if (!in_bounds (len, off) || off >= DEV) {
    bad_write = true;
    return -EIO;
  }
  memset (leg + off, 0, len);
  return 0;
}

static int
m_flush (void *opaque)
{
  (void) opaque;
  return 0;
}

static const struct jnl_io mio = { NULL, m_pread, m_pwrite, m_zero, m_flush };

/* ---- the history ---- */

/* One batch from the input, applied to model; NULL when it does not fit. */
static void *
make_batch (struct fz_in *in, struct jnl_enc *e, uint8_t *model, uint64_t *seq, uint64_t *len)
{
  unsigned n = 1 + fz_u8 (in) % 16, i, j;
  static uint8_t fill;
  void *b;

  for (i = 0; i < n; i++) {
    uint32_t off = fz_u16 (in), l = 1 + fz_u16 (in) % 1024;
    bool zero = fz_u8 (in) & 1;
    uint8_t *p = pool + i * 4096;
    if (l > DEV - off)
      l = DEV - off;
    for (j = 0; j < l; j++)
      p[j] = ++fill;
    if (zero)
      memset (model + off, 0, l);
    else
      memcpy (model + off, p, l);
    if (jnl_enc_add (e, off, l, zero ? NULL : p, (*seq)++) != 0)
      abort ();
  }
  if (jnl_enc_finish (e, G, D, &b, len, NULL) != 0)
    abort ();
  jnl_enc_reset (e);
  return b;
}

/* Write the history; the number of batches placed. */
static unsigned
history (struct fz_in *in, unsigned nb, unsigned napplied)
{
  struct jnl_enc *e = jnl_enc_new ();
  struct jnl_writer w;
  struct jnl_super sb;
  uint64_t seq = 1, len, bpos, spos;
  static uint8_t sbuf[4096] __attribute__ ((aligned (4096)));
  unsigned k, placed = 0;
  char err[256];

  jnl_super_init (&sb, G, D, DEV, &geom, RING, MAXB);
  if (!e || jnl_format (&mio, &sb, err, sizeof err) != 0 || jnl_writer_init (&w, &sb) != 0)
    abort ();
  for (k = 1; k <= nb; k++) {
    void *b;
    memcpy (models[k], models[k - 1], DEV);
    b = make_batch (in, e, models[k], &seq, &len);
    if (jnl_writer_place (&w, b, len, sbuf, &bpos, &spos) != 0) {
      free (b);
      break;
    }
    memcpy (leg + bpos, b, len);
    memcpy (leg + spos, sbuf, 4096);
    jnl_writer_flushed (&w);
    placed = k;
    if (k <= napplied) {
      memcpy (leg, models[k], DEV);                 /* applied in place, flushed */
      jnl_writer_applied (&w, k);
    }
    free (b);
  }
  if (jnl_writer_release (&w, sbuf, &spos) != 0)
    abort ();
  memcpy (leg + spos, sbuf, 4096);
  jnl_writer_flushed (&w);
  jnl_writer_destroy (&w);
  jnl_enc_free (e);
  return placed;
}

static void
patch (struct fz_in *in, uint8_t flags)
{
  uint64_t base = flags & F_SB ? geom.sb_off : geom.ring_off;
  uint64_t span = flags & F_SB ? 8192 + RING : RING;

  while (in->n) {
    uint64_t off = base + fz_u16 (in) % span;
    unsigned len = 1 + fz_u8 (in) % 16, i;
    for (i = 0; i < len && off + i < base + span; i++)
      leg[off + i] = fz_u8 (in);
  }
  if (flags & F_RESEAL) {
    uint64_t o;
    for (o = 0; o < RING; o += 4096) {
      struct jnl_batch_hdr *h = (struct jnl_batch_hdr *) (leg + geom.ring_off + o);
      if (!memcmp (h->magic, JNL_BATCH_MAGIC, 8) && h->total_len <= RING - o) {
        h->crc = 0;
        h->crc = crc32c (0, h, h->total_len);
      }
    }
    for (o = 0; o < 8192; o += 4096) {
      struct jnl_super *s = (struct jnl_super *) (leg + geom.sb_off + o);
      s->crc = crc32c (0, s, offsetof (struct jnl_super, crc));
    }
  }
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  fz_reports_install ();
  jnl_geom (DEV, sizeof leg, &geom);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fz_in in = { data, size };
  uint8_t flags = fz_u8 (&in);
  unsigned nb = 1 + fz_u8 (&in) % MAXBATCH, napplied = fz_u8 (&in) % (MAXBATCH + 1), placed, j;
  static uint8_t before[DEV];
  struct jnl_replay_sum sum;
  struct jnl_super sb;
  char err[256];
  int rc;

  memset (leg, 0, sizeof leg);
  memset (models[0], 0, DEV);
  placed = history (&in, nb, napplied);
  if (napplied > placed)
    napplied = placed;
  patch (&in, flags);

  writes = 0;
  bad_write = false;
  rc = jnl_read_super (&mio, &geom, &sb, err, sizeof err);
  if (rc != 0) {
    FZ_CHECK ("journal-invalid", (flags & F_SB) && writes == 0,
              "read_super %d without damage to the superblocks (%s), %u writes", rc, err, writes);
    return 0;
  }
  rc = jnl_replay (&mio, &sb, &sum, err, sizeof err);
  FZ_CHECK ("journal-bounds", !bad_write, "a write outside the device and the superblocks");
  if (rc != 0)
    return 0;
  if (!(flags & (F_SB | F_RESEAL))) {
    j = (unsigned) sb.applied;
    FZ_CHECK ("journal-prefix", j >= napplied && j <= placed && !memcmp (leg, models[j], DEV),
              "applied %u (placed %u, napplied %u), device %s the state after it", j, placed,
              napplied, j <= MAXBATCH && !memcmp (leg, models[j], DEV) ? "is" : "is not");
  }
  writes = 0;
  memcpy (before, leg, DEV);
  rc = jnl_replay (&mio, &sb, &sum, err, sizeof err);
  FZ_CHECK ("journal-idempotent", rc == 0 && sum.batches == 0 && writes == 0 &&
            !memcmp (before, leg, DEV), "second replay: rc %d, %" PRIu64 " batches, %u writes",
            rc, sum.batches, writes);
  return 0;
}
