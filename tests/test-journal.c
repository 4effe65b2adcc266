/* Unit test: the agentless journal (src/journal.c, src/journal-enc.c).
 *   - coalescing: an overwrite-heavy batch (16 MiB hot set) holds each
 *     block once; hand-made cases (zero over data, data over zero,
 *     adjacency, the JNL_EXT_MAX split) and random batches checked
 *     against a byte-array model: the batch leaves exactly the model's
 *     bytes, its extents are sorted, disjoint, merged, and cover exactly
 *     the bytes the entries wrote;
 *   - superblock copies: the newer valid one wins, torn or misplaced
 *     copies do not count, blank and garbage areas, every byte flip;
 *   - the writer's ring: a random run against a model of which batches
 *     are live (not released by a flushed superblock): a batch never
 *     lands on a live one, the free space is exact, wrap by jnl_next_off,
 *     -EBUSY/-ENOSPC/-E2BIG;
 *   - replay over a labelled leg in a file: the write of the last batch
 *     cut at every 512-byte boundary, its header torn, a byte flipped, a
 *     stale number, another journal id, the new superblock torn: the data
 *     equals the state after the previous batches (or after all when the
 *     batch is whole), never a mix, with the batch before it half applied
 *     in place; a second replay finds nothing and changes nothing;
 *   - locating: no label, no journal, an invalid superblock, another
 *     device's; out of room (the message names the size needed);
 *   - jnl_prepare, what an opener of the leg calls: a blank leg gets a
 *     journal, a written one is replayed and kept, another size is
 *     replayed then made anew, an invalid or foreign superblock and a leg
 *     without room are refused with the leg unchanged.
 */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "journal-leg.h"
#include "journal.h"

static char path[] = "/tmp/test-journal.XXXXXX";
static int fd;
static unsigned checks;

#define CHECK(c) do { assert (c); checks++; } while (0)

static const uint8_t G[16] = { 1, 2, 3 }, D[16] = { 4, 5, 6 };

/* ---- decoding a batch as replay would, into memory ---- */

static const struct jnl_entry *
table_of (const void *b)
{
  return (const struct jnl_entry *) ((const uint8_t *) b + JNL_HDR_SIZE);
}

static void
apply_mem (const void *b, uint8_t *mem)
{
  const struct jnl_batch_hdr *h = b;
  const struct jnl_entry *t = table_of (b);
  const uint8_t *d = (const uint8_t *) b +
    (JNL_HDR_SIZE + h->nentries * sizeof *t + 4095) / 4096 * 4096;
  uint32_t i;

  for (i = 0; i < h->nentries; i++) {
    if (t[i].flags == JNL_DATA) {
      memcpy (mem + t[i].off, d, t[i].len);
      d += t[i].len;
    }
    else
      memset (mem + t[i].off, 0, t[i].len);
  }
}

/* ---- coalescing ---- */

static void
expect_entries (struct jnl_enc *e, const struct jnl_entry *want, unsigned n)
{
  void *b;
  uint64_t len;
  unsigned i;

  CHECK (jnl_enc_finish (e, G, D, &b, &len, NULL) == 0);
  CHECK (((struct jnl_batch_hdr *) b)->nentries == n);
  for (i = 0; i < n; i++)
    CHECK (!memcmp (&table_of (b)[i], &want[i], sizeof *want));
  free (b);
  jnl_enc_reset (e);
}

static void
test_coalesce_cases (void)
{
  struct jnl_enc *e = jnl_enc_new ();
  static uint8_t a[200], z[200];
  uint8_t mem[300];
  struct jnl_enc_stats st;
  void *b;
  uint64_t len;

  memset (a, 0xaa, sizeof a);
  /* zero over data */
  jnl_enc_add (e, 0, 100, a, 1);
  jnl_enc_add (e, 50, 100, NULL, 2);
  expect_entries (e, (struct jnl_entry[]) { { 0, 50, JNL_DATA }, { 50, 100, JNL_ZERO } }, 2);
  /* data over the middle of zeroes */
  jnl_enc_add (e, 0, 100, NULL, 1);
  jnl_enc_add (e, 40, 20, a, 2);
  expect_entries (e, (struct jnl_entry[]) { { 0, 40, JNL_ZERO }, { 40, 20, JNL_DATA },
                                            { 60, 40, JNL_ZERO } }, 3);
  /* adjacency joins the same kind only, in any order of arrival */
  jnl_enc_add (e, 10, 10, a, 1);
  jnl_enc_add (e, 0, 10, a, 2);
  jnl_enc_add (e, 20, 5, NULL, 3);
  jnl_enc_add (e, 25, 5, NULL, 4);
  expect_entries (e, (struct jnl_entry[]) { { 0, 20, JNL_DATA }, { 20, 10, JNL_ZERO } }, 2);
  /* a write covering several older ones, and the data kept is the newest */
  memset (z, 0x55, sizeof z);
  jnl_enc_add (e, 5, 10, a, 1);
  jnl_enc_add (e, 30, 10, NULL, 2);
  jnl_enc_add (e, 0, 200, z, 3);
  jnl_enc_add (e, 100, 1, a, 4);
  CHECK (jnl_enc_finish (e, G, D, &b, &len, &st) == 0);
  CHECK (st.in_entries == 4 && st.in_bytes == 211 && st.out_entries == 1 && st.out_bytes == 200);
  memset (mem, 0, sizeof mem);
  apply_mem (b, mem);
  CHECK (mem[99] == 0x55 && mem[100] == 0xaa && mem[101] == 0x55 && mem[5] == 0x55 && mem[200] == 0);
  CHECK (((struct jnl_batch_hdr *) b)->first_seq == 1 && ((struct jnl_batch_hdr *) b)->last_seq == 4);
  free (b);
  jnl_enc_reset (e);
  /* runs longer than JNL_EXT_MAX split; the length estimate holds */
  jnl_enc_add (e, 0, UINT32_MAX, NULL, 1);
  jnl_enc_add (e, UINT32_MAX, 10, NULL, 2);
  len = jnl_enc_length (e);
  expect_entries (e, (struct jnl_entry[]) { { 0, JNL_EXT_MAX, JNL_ZERO },
      { JNL_EXT_MAX, JNL_EXT_MAX, JNL_ZERO }, { 2ull * JNL_EXT_MAX, JNL_EXT_MAX, JNL_ZERO },
      { 3ull * JNL_EXT_MAX, JNL_EXT_MAX, JNL_ZERO }, { 4ull * JNL_EXT_MAX, 9, JNL_ZERO } }, 5);
  CHECK (len >= 4096);
  CHECK (jnl_enc_add (e, 0, 0, a, 1) == -EINVAL);
  CHECK (jnl_enc_add (e, UINT64_MAX - 5, 10, a, 1) == -EINVAL);
  jnl_enc_free (e);
  printf ("coalescing: hand-made cases ok\n");
}

/* The batch's extents: sorted, disjoint, merged, and covering exactly
 * what the entries wrote (mask: 0 untouched, 1 data, 2 zeroes). */
static void
check_extents (const void *b, const uint8_t *mask, uint64_t size)
{
  const struct jnl_batch_hdr *h = b;
  const struct jnl_entry *t = table_of (b);
  uint64_t covered = 0, data = 0, written = 0, i, k;

  for (i = 0; i < h->nentries; i++) {
    CHECK (t[i].len > 0 && t[i].off + t[i].len <= size);
    if (i)
      CHECK (t[i - 1].off + t[i - 1].len < t[i].off ||
             (t[i - 1].off + t[i - 1].len == t[i].off && t[i - 1].flags != t[i].flags));
    for (k = t[i].off; k < t[i].off + t[i].len; k++)
      assert (mask[k] == (t[i].flags == JNL_DATA ? 1 : 2));
    covered += t[i].len;
    data += t[i].flags == JNL_DATA ? t[i].len : 0;
  }
  for (k = 0; k < size; k++)
    written += mask[k] != 0;
  CHECK (covered == written && data == h->data_bytes);
}

static void
test_coalesce_random (void)
{
  enum { SIZE = 20000, ROUNDS = 3000, MAXN = 40, MAXLEN = 3000 };
  struct jnl_enc *e = jnl_enc_new ();
  uint8_t *base = malloc (SIZE), *model = malloc (SIZE), *mem = malloc (SIZE), *mask = malloc (SIZE);
  uint8_t *pool = malloc (MAXN * MAXLEN);
  uint32_t rng = 12345;
  uint64_t seq = 1, in = 0, out = 0, r, i;

  for (i = 0; i < SIZE; i++)
    base[i] = (uint8_t) tl_rand (&rng);
  for (r = 0; r < ROUNDS; r++) {
    unsigned n = 1 + tl_rand (&rng) % MAXN;
    struct jnl_enc_stats st;
    uint64_t len;
    void *b;
    memcpy (model, base, SIZE);
    tl_random_entries (e, model, SIZE, n, 1 + tl_rand (&rng) % MAXLEN, &seq, &rng, pool);
    CHECK (jnl_enc_finish (e, G, D, &b, &len, &st) == 0);
    CHECK (len == st.total_len && len % 4096 == 0 && st.in_entries == n);
    memcpy (mem, base, SIZE);
    apply_mem (b, mem);
    CHECK (!memcmp (mem, model, SIZE));
    /* mask from the batch's own table checked against the model: every
       byte the model changed is covered */
    memset (mask, 0, SIZE);
    for (i = 0; i < ((struct jnl_batch_hdr *) b)->nentries; i++) {
      const struct jnl_entry *t = &table_of (b)[i];
      memset (mask + t->off, t->flags == JNL_DATA ? 1 : 2, t->len);
    }
    for (i = 0; i < SIZE; i++)
      assert (model[i] == base[i] || mask[i]);
    check_extents (b, mask, SIZE);
    in += st.in_bytes;
    out += st.out_bytes;
    free (b);
    jnl_enc_reset (e);
  }
  printf ("coalescing: %d random batches equal the model; data bytes %" PRIu64 " -> %" PRIu64
          " (%.2fx)\n", ROUNDS, in, out, (double) out / (double) in);
  free (base), free (model), free (mem), free (mask), free (pool);
  jnl_enc_free (e);
}

/* The mask above comes from the batch itself; this one does not: every
 * entry's range, in log order, on a byte array, against the table. */
static void
test_coalesce_mask (void)
{
  enum { SIZE = 4096, ROUNDS = 2000 };
  struct jnl_enc *e = jnl_enc_new ();
  static uint8_t mask[SIZE], data[64 * 600];
  uint32_t rng = 777;
  unsigned r, i;

  memset (data, 0x11, sizeof data);
  for (r = 0; r < ROUNDS; r++) {
    unsigned n = 1 + tl_rand (&rng) % 64;
    uint64_t len;
    void *b;
    memset (mask, 0, SIZE);
    for (i = 0; i < n; i++) {
      uint32_t off = tl_rand (&rng) % SIZE, l = 1 + tl_rand (&rng) % 600;
      bool z = tl_rand (&rng) % 3 == 0;
      if (l > SIZE - off)
        l = SIZE - off;
      CHECK (jnl_enc_add (e, off, l, z ? NULL : data, i) == 0);
      memset (mask + off, z ? 2 : 1, l);
    }
    CHECK (jnl_enc_length (e) >= 4096);
    len = jnl_enc_length (e);
    CHECK (jnl_enc_finish (e, G, D, &b, &len, NULL) == 0);
    check_extents (b, mask, SIZE);
    free (b);
    jnl_enc_reset (e);
  }
  jnl_enc_free (e);
  printf ("coalescing: %d random batches cover exactly the bytes written\n", ROUNDS);
}

/* An overwrite-heavy batch: 4 KiB writes at random over a 16 MiB hot
 * set, 64 MiB of them (fio's randwrite over a small file): the batch
 * holds each block once. */
static void
test_coalesce_hot (void)
{
  enum { BS = 4096, HOT = 16 << 20, WRITES = 16384 };
  struct jnl_enc *e = jnl_enc_new ();
  static uint8_t seen[HOT / BS], pool[1 << 20];
  struct jnl_enc_stats st;
  uint32_t rng = 2024;
  uint64_t unique = 0, len, i;
  void *b;

  for (i = 0; i < WRITES; i++) {
    uint64_t blk = tl_rand (&rng) % (HOT / BS);
    unique += !seen[blk];
    seen[blk] = 1;
    CHECK (jnl_enc_add (e, blk * BS, BS, pool + (i % 256) * BS, i + 1) == 0);
  }
  CHECK (jnl_enc_length (e) >= unique * BS);
  CHECK (jnl_enc_finish (e, G, D, &b, &len, &st) == 0);
  CHECK (st.in_bytes == (uint64_t) WRITES * BS && st.out_bytes == unique * BS);
  CHECK (len >= st.out_bytes && len <= st.out_bytes + 4096 + st.out_entries * 16 + 4096);
  printf ("coalescing: %d 4 KiB writes over a 16 MiB hot set: %" PRIu64 " MiB -> %" PRIu64
          " MiB in %" PRIu64 " entries (%.2fx; the wire carries it twice: ring and place)\n",
          WRITES, st.in_bytes >> 20, st.out_bytes >> 20, st.out_entries,
          (double) st.out_bytes / (double) st.in_bytes);
  free (b);
  jnl_enc_free (e);
}

/* ---- superblock copies ---- */

static void
make_super (struct jnl_super *s, uint64_t gen, uint64_t applied)
{
  struct jnl_geom g;

  jnl_geom (1 << 20, 8 << 20, &g);
  jnl_super_init (s, G, D, 1 << 20, &g, 1 << 20, 0);
  s->jid = 42;
  s->gen = gen;
  s->applied = applied;
  jnl_super_seal (s);
}

static void
test_super (void)
{
  static uint8_t copies[2 * 4096];
  struct jnl_super a, b, out;
  unsigned i;

  make_super (&a, 4, 10);
  make_super (&b, 5, 11);
  CHECK (jnl_super_valid (&a) && a.max_batch == 256 * 1024);
  memcpy (copies, &a, 4096);
  memcpy (copies + 4096, &b, 4096);
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_OK && out.gen == 5 && out.applied == 11);
  make_super (&a, 6, 12);                            /* A newer */
  memcpy (copies, &a, 4096);
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_OK && out.gen == 6);
  memset (copies + 100, 0x5a, 3000);                 /* A torn */
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_OK && out.gen == 5);
  make_super (&a, 7, 12);                            /* an odd gen in slot A does not count */
  memcpy (copies, &a, 4096);
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_OK && out.gen == 5);
  memset (copies + 4096, 0, 4096);                   /* ... nor does B, blank now */
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_BAD);
  memset (copies, 0, sizeof copies);
  CHECK (jnl_super_decode (copies, &out) == JNL_SB_BLANK);
  make_super (&a, 2, 1);
  for (i = 0; i < 4096; i++) {                       /* every flip is seen */
    struct jnl_super c = a;
    ((uint8_t *) &c)[i] ^= 0x10;
    assert (!jnl_super_valid (&c));
  }
  checks += 4096;
  /* the geometry rules, with the checksum recomputed */
  make_super (&a, 2, 1);
  a.max_batch = a.ring_size;                  jnl_super_seal (&a); CHECK (!jnl_super_valid (&a));
  make_super (&a, 2, 1);
  a.tail_off = a.ring_size - 4096;            jnl_super_seal (&a); CHECK (!jnl_super_valid (&a));
  make_super (&a, 2, 1);
  a.tail_off = 100;                           jnl_super_seal (&a); CHECK (!jnl_super_valid (&a));
  make_super (&a, 2, 1);
  a.jid = 0;                                  jnl_super_seal (&a); CHECK (!jnl_super_valid (&a));
  printf ("superblock: copies and validity ok\n");
}

/* ---- the writer's ring against a model ---- */

struct live { uint64_t number, off, len; };

static void
test_ring (void)
{
  enum { RING = 64 * 1024, MAXB = 16 * 1024, STEPS = 200000 };
  struct jnl_super sb;
  struct jnl_writer w;
  struct jnl_geom g;
  struct live lv[64];
  unsigned nlv = 0, i, placed = 0, full = 0, wraps = 0;
  uint64_t durable = 0, applied = 0, next = 1, head = 0, pending_applied = 0, step;
  bool pending = false;
  uint32_t rng = 99;
  void *sbb, *batch;

  assert (posix_memalign (&sbb, 4096, 4096) == 0 && posix_memalign (&batch, 4096, MAXB) == 0);
  jnl_geom (1 << 20, 8 << 20, &g);
  jnl_super_init (&sb, G, D, 1 << 20, &g, RING, MAXB);
  jnl_super_seal (&sb);
  CHECK (jnl_writer_init (&w, &sb) == 0);
  for (step = 0; step < STEPS; step++) {
    uint32_t op = tl_rand (&rng) % 4;
    uint64_t bpos, spos;
    if (pending) {                                   /* the flush comes first */
      memset (batch, 0, 4096);
      ((struct jnl_batch_hdr *) batch)->total_len = 4096;
      CHECK (jnl_writer_place (&w, batch, 4096, sbb, &bpos, &spos) == -EBUSY);
      jnl_writer_flushed (&w);
      durable = pending_applied;
      for (i = 0; i < nlv && lv[i].number <= durable; i++)
        ;
      memmove (lv, lv + i, (nlv - i) * sizeof *lv);
      nlv -= i;
      pending = false;
      continue;
    }
    if (op == 0 && applied + 1 < next) {
      CHECK (jnl_writer_applied (&w, applied + 2) == -EINVAL);
      CHECK (jnl_writer_applied (&w, ++applied) == 0);
    }
    else if (op == 1) {
      uint64_t len = 4096 * (1 + tl_rand (&rng) % (MAXB / 4096)), tail = 0;
      bool fits = true;
      for (i = 0; i < nlv; i++)                      /* the model: no live batch under it */
        if (head < lv[i].off + lv[i].len && lv[i].off < head + len)
          fits = false;
      CHECK (jnl_writer_fits (&w, len) == fits);
      memset (batch, 0, 4096);
      ((struct jnl_batch_hdr *) batch)->total_len = len;
      if (!fits) {
        CHECK (jnl_writer_place (&w, batch, len, sbb, &bpos, &spos) == -ENOSPC);
        full++;
        continue;
      }
      CHECK (jnl_writer_place (&w, batch, len, sbb, &bpos, &spos) == 0);
      CHECK (bpos == sb.ring_off + head && head + len <= RING);
      CHECK (((struct jnl_batch_hdr *) batch)->number == next);
      CHECK (crc32c (0, batch, 4096) != 0);
      lv[nlv++] = (struct live) { next++, head, len };
      head = head + len + MAXB <= RING ? head + len : 0;
      wraps += head == 0;
      placed++;
      for (i = 0; i < nlv && lv[i].number != applied + 1; i++)
        ;
      tail = i < nlv ? lv[i].off : head;
      CHECK (((struct jnl_super *) sbb)->applied == applied &&
             ((struct jnl_super *) sbb)->tail_off == tail && jnl_super_valid (sbb));
      CHECK (spos == sb.ring_off - 8192 + (((struct jnl_super *) sbb)->gen & 1) * 4096);
      pending = true;
      pending_applied = applied;
    }
    else if (op == 2) {
      CHECK (jnl_writer_release (&w, sbb, &spos) == 0);
      pending = true;
      pending_applied = applied;
    }
  }
  memset (batch, 0, 4096);
  ((struct jnl_batch_hdr *) batch)->total_len = MAXB + 4096;
  jnl_writer_flushed (&w);
  CHECK (jnl_writer_place (&w, batch, MAXB + 4096, sbb, &(uint64_t) { 0 }, &(uint64_t) { 0 }) == -E2BIG);
  CHECK (placed > 1000 && full > 100 && wraps > 100);
  printf ("ring: %u batches placed, %u refused while full, %u wraps: never over a live batch\n",
          placed, full, wraps);
  jnl_writer_destroy (&w);
  free (sbb);
  free (batch);
}

/* ---- replay over a labelled leg in a file ---- */

enum { DEV = 256 * 1024, ROOM = 1024 * 1024, RING = 512 * 1024, MAXB = 96 * 1024 };

static void
read_dev (struct tl_leg *l, uint8_t *buf)
{
  assert (pread (l->fd, buf, DEV, 0) == DEV);
}

/* Locate and replay: the summary; the superblock after in *sb. */
static struct jnl_replay_sum
replay (struct tl_leg *l, struct jnl_super *sb)
{
  struct jnl_replay_sum sum;
  struct jnl_geom g;
  char err[256];
  int rc;

  rc = jnl_locate (&l->io, l->leg_size, &g, sb, err, sizeof err);
  if (rc != 0)
    fprintf (stderr, "locate: %d %s\n", rc, err);
  assert (rc == 0);
  rc = jnl_replay (&l->io, sb, &sum, err, sizeof err);
  if (rc != 0)
    fprintf (stderr, "replay: %s\n", err);
  assert (rc == 0);
  return sum;
}

/* The file back to image (leg_size bytes). */
static void
restore (struct tl_leg *l, const uint8_t *image)
{
  assert (pwrite (l->fd, image, l->leg_size, 0) == (ssize_t) l->leg_size);
}

/* Replay from image with the last batch (len bytes at bpos) written as
 * given by what: expect after (or before) and nothing on a second run. */
static void
replay_expect (struct tl_leg *l, const uint8_t *image, const uint8_t *want, uint64_t want_applied)
{
  static uint8_t got[DEV];
  struct jnl_replay_sum s;
  struct jnl_super sb;

  s = replay (l, &sb);
  (void) s;
  read_dev (l, got);
  CHECK (!memcmp (got, want, DEV));
  CHECK (sb.applied == want_applied);
  s = replay (l, &sb);
  CHECK (s.batches == 0 && sb.applied == want_applied);
  read_dev (l, got);
  CHECK (!memcmp (got, want, DEV));
  (void) image;
}

static void
test_replay (void)
{
  static uint8_t model[DEV], before[DEV], pool[16 * 8192], *image;
  struct jnl_enc *e = jnl_enc_new ();
  struct jnl_writer w;
  struct jnl_super sb, cur;
  struct tl_leg l;
  uint64_t seq = 1, len, bpos, spos, cut, k;
  uint32_t rng = 4242;
  unsigned cuts = 0;
  void *b, *sbb, *prev;

  tl_make_leg (&l, fd, DEV, ROOM, true, 5);
  tl_format (&l, RING, MAXB, &sb);
  read_dev (&l, model);
  CHECK (jnl_writer_init (&w, &sb) == 0);
  /* batches applied in place and released, around the ring several times */
  for (k = 1; k <= 40; k++) {
    tl_random_entries (e, model, DEV, 1 + tl_rand (&rng) % 16, 8192, &seq, &rng, pool);
    b = tl_finish (&l, e, &len);
    tl_write_batch (&l, &w, b, len);
    tl_apply (&l, b, UINT32_MAX);
    CHECK (l.io.flush (l.io.opaque) == 0);
    CHECK (jnl_writer_applied (&w, k) == 0);
    free (b);
  }
  /* batch 41: in the ring, half applied in place (a crash in mid-apply) */
  tl_random_entries (e, model, DEV, 12, 8192, &seq, &rng, pool);
  prev = tl_finish (&l, e, &len);
  tl_write_batch (&l, &w, prev, len);
  tl_apply (&l, prev, ((struct jnl_batch_hdr *) prev)->nentries / 2);
  memcpy (before, model, DEV);
  /* batch 42: placed; the image is the leg before its write */
  tl_random_entries (e, model, DEV, 12, 8192, &seq, &rng, pool);
  b = tl_finish (&l, e, &len);
  image = malloc (l.leg_size);
  assert (image && pread (fd, image, l.leg_size, 0) == (ssize_t) l.leg_size);
  assert (posix_memalign (&sbb, 4096, 4096) == 0);
  CHECK (jnl_writer_place (&w, b, len, sbb, &bpos, &spos) == 0);
  CHECK (((struct jnl_super *) sbb)->applied == 40);
  for (cut = 0; cut <= len; cut += 512, cuts++) {
    restore (&l, image);
    assert (pwrite (fd, b, cut, (off_t) bpos) == (ssize_t) cut);
    if (cut % 4096 == 0)                              /* with the superblock, or torn */
      assert (pwrite (fd, cut == len ? sbb : (uint8_t *) b + 64, 4096, (off_t) spos) == 4096);
    replay_expect (&l, image, cut == len ? model : before, cut == len ? 42 : 41);
  }
  /* header torn, a byte flipped, a stale number, another journal */
  for (k = 0; k < 4; k++) {
    uint8_t *c = malloc (len);
    struct jnl_batch_hdr *h = (struct jnl_batch_hdr *) c;
    memcpy (c, b, len);
    if (k == 0)
      memset (c + 8, 0x77, 100);
    else if (k == 1)
      c[len - 4096 + 17] ^= 1;                        /* the data area (or padding) */
    else {
      if (k == 2)
        h->number += 2;
      else
        h->jid ^= 1;
      h->crc = 0;
      h->crc = crc32c (0, c, len);
    }
    restore (&l, image);
    assert (pwrite (fd, c, len, (off_t) bpos) == (ssize_t) len);
    replay_expect (&l, image, before, 41);
    free (c);
  }
  /* the whole batch: replay from the superblock written with it, too */
  restore (&l, image);
  assert (pwrite (fd, b, len, (off_t) bpos) == (ssize_t) len);
  assert (pwrite (fd, sbb, 4096, (off_t) spos) == 4096);
  CHECK (replay (&l, &cur).batches == 2 && cur.applied == 42 && cur.applied_seq == seq - 1);
  /* the writer continues from the replayed superblock */
  jnl_writer_destroy (&w);
  CHECK (jnl_writer_init (&w, &cur) == 0 && w.next_number == 43);
  printf ("replay: %u cuts of a %" PRIu64 "-byte batch and 4 damaged ones: the state before or "
          "after it, never a mix; a second replay finds nothing\n", cuts, len);
  jnl_writer_destroy (&w);
  jnl_enc_free (e);
  free (b), free (prev), free (sbb), free (image);
}

/* ---- locating, room, errors ---- */

static void
test_locate (void)
{
  struct tl_leg l;
  struct jnl_super sb, other;
  struct jnl_geom g;
  char err[512], want[64];
  static uint8_t junk[8192];

  tl_make_leg (&l, fd, DEV, ROOM, false, 1);
  CHECK (jnl_locate (&l.io, l.leg_size, &g, &sb, err, sizeof err) == 1 && strstr (err, "no label"));
  tl_make_leg (&l, fd, DEV, ROOM, true, 1);
  CHECK (jnl_locate (&l.io, l.leg_size, &g, &sb, err, sizeof err) == 1 && strstr (err, "blank"));
  tl_format (&l, RING, 0, &sb);
  CHECK (jnl_locate (&l.io, l.leg_size, &g, &sb, err, sizeof err) == 0);
  CHECK (g.sb_off == DEV + 4096 && g.ring_off == DEV + 12288 && sb.max_batch == RING / 4);
  memset (junk, 0x33, sizeof junk);
  assert (pwrite (fd, junk, sizeof junk, (off_t) g.sb_off) == sizeof junk);
  CHECK (jnl_locate (&l.io, l.leg_size, &g, &sb, err, sizeof err) == -EINVAL &&
         strstr (err, "superblock is invalid"));
  sb.crc ^= 1;
  CHECK (jnl_replay (&l.io, &sb, &(struct jnl_replay_sum) { 0 }, err, sizeof err) == -EINVAL);
  /* a superblock of another device */
  jnl_super_init (&other, l.group, D, DEV, &g, RING, 0);
  CHECK (jnl_format (&l.io, &other, err, sizeof err) == 0);
  CHECK (jnl_locate (&l.io, l.leg_size, &g, &sb, err, sizeof err) == -EINVAL &&
         strstr (err, "another group or device"));
  /* room */
  CHECK (jnl_check_room (DEV, l.room_end, l.leg_size, l.room_end - DEV - 12288, err, sizeof err) == 0);
  CHECK (jnl_check_room (DEV, l.room_end, l.leg_size, l.room_end - DEV, err, sizeof err) == -ENOSPC);
  CHECK (strstr (err, "needs 12288 bytes more") != NULL);
  snprintf (want, sizeof want, "%" PRIu64 " bytes)", l.leg_size + 12288);
  CHECK (strstr (err, want) != NULL);
  CHECK (jnl_check_room (DEV, l.room_end, l.leg_size, 5000, err, sizeof err) == -EINVAL);
  printf ("locate: no label, blank, invalid, foreign, room: ok (%s)\n", err);
}

static uint32_t
file_crc (const struct tl_leg *l)
{
  uint8_t *buf = malloc (l->leg_size);
  uint32_t c;

  assert (buf && pread (l->fd, buf, l->leg_size, 0) == (ssize_t) l->leg_size);
  c = crc32c (0, buf, l->leg_size);
  free (buf);
  return c;
}

static int
prepare (struct tl_leg *l, const uint8_t *device, uint64_t ring, struct jnl_super *sb,
         struct jnl_replay_sum *sum, char *err)
{
  return jnl_prepare (&l->io, l->group, device, DEV, l->room_end, l->leg_size, ring, sb, sum,
                      err, 512);
}

static void
test_prepare (void)
{
  static uint8_t model[DEV], got[DEV], pool[16 * 8192];
  struct jnl_enc *e = jnl_enc_new ();
  struct jnl_replay_sum sum;
  struct jnl_writer w;
  struct jnl_super sb;
  struct tl_leg l;
  uint64_t seq = 1, len, jid, k;
  uint32_t rng = 31337, c;
  char err[512];
  void *b;

  tl_make_leg (&l, fd, DEV, ROOM, true, 3);
  c = file_crc (&l);
  CHECK (prepare (&l, l.device, l.room_end - DEV, &sb, &sum, err) == -ENOSPC);
  CHECK (strstr (err, "needs 12288 bytes more") && file_crc (&l) == c);
  CHECK (prepare (&l, l.device, RING, &sb, &sum, err) == 0);
  CHECK (sum.batches == 0 && sb.ring_size == RING && sb.applied == 0 && sb.ring_off == DEV + 12288);
  jid = sb.jid;
  read_dev (&l, model);
  CHECK (jnl_writer_init (&w, &sb) == 0);
  for (k = 0; k < 3; k++) {                          /* written, not applied in place */
    tl_random_entries (e, model, DEV, 10, 8192, &seq, &rng, pool);
    b = tl_finish (&l, e, &len);
    tl_write_batch (&l, &w, b, len);
    free (b);
  }
  jnl_writer_destroy (&w);
  CHECK (prepare (&l, l.device, RING, &sb, &sum, err) == 0);
  CHECK (sum.batches == 3 && sb.applied == 3 && sb.jid == jid);
  read_dev (&l, got);
  CHECK (!memcmp (got, model, DEV));
  CHECK (prepare (&l, l.device, 2 * RING, &sb, &sum, err) == 0);
  CHECK (sum.batches == 0 && sb.applied == 0 && sb.ring_size == 2 * RING && sb.jid != jid);
  c = file_crc (&l);
  CHECK (prepare (&l, D, RING, &sb, &sum, err) == -EINVAL && strstr (err, "another group or device"));
  CHECK (file_crc (&l) == c);
  memset (got, 0x44, 8192);
  assert (pwrite (fd, got, 8192, DEV + 4096) == 8192);
  c = file_crc (&l);
  CHECK (prepare (&l, l.device, RING, &sb, &sum, err) == -EINVAL && strstr (err, "invalid"));
  CHECK (file_crc (&l) == c);
  jnl_enc_free (e);
  printf ("prepare: new, replayed and kept, resized, refused (foreign, invalid, no room): ok\n");
}

int
main (void)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  assert ((fd = mkstemp (path)) >= 0);
  unlink (path);
  test_coalesce_cases ();
  test_coalesce_random ();
  test_coalesce_mask ();
  test_coalesce_hot ();
  test_super ();
  test_ring ();
  test_replay ();
  test_locate ();
  test_prepare ();
  close (fd);
  printf ("journal: all tests passed (%u checks)\n", checks);
  return 0;
}
