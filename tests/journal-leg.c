/* journal-leg.c: test helpers for the agentless journal (journal-leg.h). */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal-leg.h"
#include "label.h"

#define REGION 65536u

uint32_t
tl_rand (uint32_t *s)
{
  uint32_t x = *s ? *s : 1;

  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

void
tl_make_leg (struct tl_leg *l, int fd, uint64_t dev_size, uint64_t room, bool label,
             unsigned seed)
{
  uint64_t area = lbl_area_size (dev_size, REGION), bitmap = lbl_bitmap_bytes (dev_size, REGION);
  uint32_t rng = seed | 1;
  uint8_t *buf = malloc (dev_size);
  struct label lb;
  struct lbl_io lio;
  char err[256];
  uint64_t i;

  memset (l, 0, sizeof *l);
  l->fd = fd;
  jnl_io_fd (&l->io, &l->fd);
  l->dev_size = dev_size;
  l->leg_size = (dev_size + room + (1u << 20) - 1) / (1u << 20) * (1u << 20) + area;
  l->room_end = lbl_base_end (l->leg_size) - bitmap;
  assert (ftruncate (fd, 0) == 0 && ftruncate (fd, (off_t) l->leg_size) == 0);
  assert (buf);
  for (i = 0; i < dev_size; i++)
    buf[i] = (uint8_t) tl_rand (&rng);
  assert (pwrite (fd, buf, dev_size, 0) == (ssize_t) dev_size);
  free (buf);
  lbl_uuid_new (l->group);
  lbl_uuid_new (l->device);
  if (!label)
    return;
  memset (&lb, 0, sizeof lb);
  memcpy (lb.group, l->group, 16);
  memcpy (lb.device, l->device, 16);
  strcpy (lb.name, "disk0");
  lb.dev_size = dev_size;
  lb.area_size = area;
  lb.bitmap_bytes = bitmap;
  lb.bitmap_offset = l->room_end;
  lb.region_size = REGION;
  lb.site = 1;
  lb.gen = lbl_gen_new ();
  lio = (struct lbl_io) { l->io.opaque, l->io.pread, l->io.pwrite, l->io.flush };
  if (lbl_write (&lio, lbl_base_end (l->leg_size), &lb, err, sizeof err) != 0) {
    fprintf (stderr, "label: %s\n", err);
    abort ();
  }
}

void
tl_format (struct tl_leg *l, uint64_t ring_size, uint64_t max_batch, struct jnl_super *sb)
{
  struct jnl_geom g;
  char err[256];

  jnl_geom (l->dev_size, l->room_end, &g);
  assert (jnl_check_room (l->dev_size, l->room_end, l->leg_size, ring_size, err, sizeof err) == 0);
  jnl_super_init (sb, l->group, l->device, l->dev_size, &g, ring_size, max_batch);
  if (jnl_format (&l->io, sb, err, sizeof err) != 0) {
    fprintf (stderr, "format: %s\n", err);
    abort ();
  }
}

void
tl_random_entries (struct jnl_enc *e, uint8_t *model, uint64_t dev_size, unsigned nent,
                   uint32_t max_len, uint64_t *seq, uint32_t *rng, uint8_t *pool)
{
  uint64_t prev_end = 0;
  unsigned i;

  for (i = 0; i < nent; i++) {
    uint32_t r = tl_rand (rng), len = 1 + tl_rand (rng) % max_len, j;
    uint64_t hot = dev_size < 65536 ? dev_size : 65536, off;
    const uint8_t *data = NULL;

    if (r % 4 == 0)                     /* adjacent to the previous one */
      off = prev_end < dev_size ? prev_end : 0;
    else if (r % 4 == 1)                /* anywhere */
      off = tl_rand (rng) % dev_size;
    else                                /* a hot set: overlaps */
      off = tl_rand (rng) % hot;
    if (r & 0x100)                      /* block aligned, as most writes */
      off &= ~UINT64_C(511);
    if (len > dev_size - off)
      len = (uint32_t) (dev_size - off);
    if ((r >> 4) % 4 != 0) {            /* a quarter are zeroes */
      uint8_t *p = pool + (uint64_t) i * max_len;
      for (j = 0; j < len; j++)
        p[j] = (uint8_t) tl_rand (rng);
      data = p;
      memcpy (model + off, p, len);
    }
    else
      memset (model + off, 0, len);
    assert (jnl_enc_add (e, off, len, data, (*seq)++) == 0);
    prev_end = off + len;
  }
}

void *
tl_finish (const struct tl_leg *l, struct jnl_enc *e, uint64_t *len)
{
  void *b;
  struct jnl_enc_stats st;

  assert (jnl_enc_finish (e, l->group, l->device, &b, len, &st) == 0);
  assert (st.total_len == *len);
  jnl_enc_reset (e);
  return b;
}

void
tl_write_batch (struct tl_leg *l, struct jnl_writer *w, void *batch, uint64_t len)
{
  uint64_t bpos, spos;
  void *sb;

  assert (posix_memalign (&sb, 4096, 4096) == 0);
  assert (jnl_writer_place (w, batch, len, sb, &bpos, &spos) == 0);
  assert (l->io.pwrite (l->io.opaque, batch, (uint32_t) len, bpos) == 0);
  assert (l->io.pwrite (l->io.opaque, sb, 4096, spos) == 0);
  assert (l->io.flush (l->io.opaque) == 0);
  jnl_writer_flushed (w);
  free (sb);
}

void
tl_apply (struct tl_leg *l, const void *batch, uint32_t n)
{
  const struct jnl_batch_hdr *h = batch;
  const struct jnl_entry *t = (const struct jnl_entry *) ((const uint8_t *) batch + JNL_HDR_SIZE);
  uint64_t data = (JNL_HDR_SIZE + (uint64_t) h->nentries * sizeof *t + 4095) / 4096 * 4096;
  uint32_t i;

  for (i = 0; i < h->nentries && i < n; i++) {
    if (t[i].flags == JNL_DATA) {
      assert (l->io.pwrite (l->io.opaque, (const uint8_t *) batch + data, t[i].len, t[i].off) == 0);
      data += t[i].len;
    }
    else
      assert (l->io.zero (l->io.opaque, t[i].len, t[i].off) == 0);
  }
}
